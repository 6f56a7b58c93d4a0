//! The answer half of a buyer format: paths into a JSON (RFC 6901 pointers) or XML (element
//! paths) answer, compiled at load, and the reading of a ping or post answer into the verdicts
//! the fan-out and delivery judge.
//!
//! Owns only reading values out of bytes. The rules that make a value a bid (amount to cents,
//! reason cleaning, lengths) stay with [`crate::auction`], so a formatted buyer is judged by the
//! same rules as a contract one.

use quick_xml::events::Event;

use crate::config::format::{AnswerConfig, AnswerKind};
use crate::config::FilterValue;

use super::{Call, FormatError};

/// Where one value sits in an answer.
#[derive(Debug, Clone, PartialEq)]
enum Path {
    /// A JSON pointer, `""` or starting with `/`.
    Pointer(String),
    /// Element names from the root, and the attribute of the last one when the path ends in
    /// `@name`.
    Xml {
        elements: Vec<String>,
        attr: Option<String>,
    },
}

impl Path {
    fn compile(kind: AnswerKind, key: &str, p: &str) -> Result<Path, FormatError> {
        let bad = |reason: String| FormatError::new(format!("answer.{key}"), reason);
        match kind {
            AnswerKind::Json => {
                if !p.is_empty() && !p.starts_with('/') {
                    return Err(bad(format!(
                        "{p:?} is not a JSON pointer (RFC 6901): it must start with `/`"
                    )));
                }
                Ok(Path::Pointer(p.to_string()))
            }
            AnswerKind::Xml => {
                let rest = p.strip_prefix('/').ok_or_else(|| {
                    bad(format!(
                        "{p:?} is not an element path: it must start with `/`"
                    ))
                })?;
                let mut elements: Vec<String> = rest.split('/').map(str::to_string).collect();
                let attr = match elements.last().and_then(|l| l.strip_prefix('@')) {
                    Some(a) => {
                        let a = a.to_string();
                        elements.pop();
                        Some(a)
                    }
                    None => None,
                };
                if elements.is_empty()
                    || elements.iter().any(|e| e.is_empty() || e.contains('@'))
                    || attr.as_deref() == Some("")
                {
                    return Err(bad(format!(
                        "{p:?} is not an element path like `/response/bid/amount` or \
                         `/response/bid/@amount`"
                    )));
                }
                Ok(Path::Xml { elements, attr })
            }
        }
    }
}

/// A compiled answer reader.
#[derive(Debug)]
pub struct Reader {
    kind: AnswerKind,
    amount: Option<Path>,
    accepted: Option<(Path, String)>,
    bid_token: Option<Path>,
    lead_id: Option<Path>,
    reject_reason: Option<Path>,
}

/// What a formatted ping answer says, before the auction's rules judge it.
#[derive(Debug, PartialEq)]
pub enum PingVerdict {
    /// The buyer bids: the amount as read (`None` when missing or not a number) and its bid token.
    Bid {
        amount: Option<f64>,
        bid_token: Option<String>,
    },
    /// The buyer declines, with its reason when the format maps one.
    NoBid { reason: Option<String> },
    /// The answer could not be read at all (`invalid_json`, `invalid_xml`).
    Unreadable(&'static str),
}

/// What a formatted 2xx post answer says.
#[derive(Debug, PartialEq)]
pub enum PostVerdict {
    /// The buyer took the lead; its lead id when the format maps one.
    Accepted { lead_id: Option<String> },
    /// The answer says no (its accepted flag is not the accepted value).
    Refused,
    /// The answer could not be read (malformed), or says yes without the lead id the format
    /// promises: the buyer may hold the lead.
    Unconfirmed,
}

/// A parsed answer, read once and then queried per path.
enum Doc<'a> {
    Json(serde_json::Value),
    Xml(&'a [u8]),
}

impl Reader {
    pub(super) fn compile(c: &AnswerConfig, call: Call) -> Result<Reader, FormatError> {
        let path = |key: &str, p: &Option<String>| {
            p.as_deref()
                .map(|p| Path::compile(c.kind, key, p))
                .transpose()
        };
        if call == Call::Ping && c.amount.is_none() {
            return Err(FormatError::new(
                "answer.amount".into(),
                "a ping answer needs the path of the bid amount".into(),
            ));
        }
        let accepted_value = match &c.accepted_value {
            None => "true".to_string(),
            Some(FilterValue::Str(s)) => s.clone(),
            Some(FilterValue::Bool(b)) => b.to_string(),
            Some(FilterValue::Int(i)) => i.to_string(),
            Some(FilterValue::Float(f)) => f.to_string(),
        };
        Ok(Reader {
            kind: c.kind,
            amount: path("amount", &c.amount)?,
            accepted: path("accepted", &c.accepted)?.map(|p| (p, accepted_value)),
            bid_token: path("bid_token", &c.bid_token)?,
            lead_id: path("lead_id", &c.lead_id)?,
            reject_reason: path("reject_reason", &c.reject_reason)?,
        })
    }

    fn parse<'a>(&self, body: &'a [u8]) -> Result<Doc<'a>, &'static str> {
        match self.kind {
            AnswerKind::Json => serde_json::from_slice(body)
                .map(Doc::Json)
                .map_err(|_| "invalid_json"),
            AnswerKind::Xml => {
                if xml_well_formed(body) {
                    Ok(Doc::Xml(body))
                } else {
                    Err("invalid_xml")
                }
            }
        }
    }

    /// Whether the accepted flag (when mapped) says yes; unmapped means yes.
    fn accepted(&self, doc: &Doc<'_>) -> bool {
        match &self.accepted {
            None => true,
            Some((p, want)) => get(doc, p).is_some_and(|v| v.trim() == want),
        }
    }

    /// Reads a 2xx ping answer.
    pub fn ping(&self, body: &[u8]) -> PingVerdict {
        let doc = match self.parse(body) {
            Ok(d) => d,
            Err(why) => return PingVerdict::Unreadable(why),
        };
        let read = |p: &Option<Path>| p.as_ref().and_then(|p| get(&doc, p));
        if !self.accepted(&doc) {
            return PingVerdict::NoBid {
                reason: read(&self.reject_reason),
            };
        }
        PingVerdict::Bid {
            amount: read(&self.amount).and_then(|a| number(&a)),
            bid_token: read(&self.bid_token),
        }
    }

    /// Reads a 2xx post answer.
    pub fn post(&self, body: &[u8]) -> PostVerdict {
        let Ok(doc) = self.parse(body) else {
            return PostVerdict::Unconfirmed;
        };
        if !self.accepted(&doc) {
            return PostVerdict::Refused;
        }
        match &self.lead_id {
            None => PostVerdict::Accepted { lead_id: None },
            Some(p) => match get(&doc, p) {
                Some(id) => PostVerdict::Accepted { lead_id: Some(id) },
                // The format promises a lead id; an answer that accepts without one confirms
                // nothing, yet the buyer may hold the lead.
                None => PostVerdict::Unconfirmed,
            },
        }
    }
}

/// A decimal number written as text (`12.50`, ` 12 `); anything else is no amount.
fn number(s: &str) -> Option<f64> {
    let s = s.trim();
    // Rust also parses `inf`, `NaN` and `1e3`; a buyer's price is plain decimal digits.
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+');
    plain.then(|| s.parse::<f64>().ok()).flatten()
}

/// The value at `path` as text; `None` when absent, `null`, or not a scalar.
fn get(doc: &Doc<'_>, path: &Path) -> Option<String> {
    match (doc, path) {
        (Doc::Json(v), Path::Pointer(p)) => match v.pointer(p)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            _ => None,
        },
        (Doc::Xml(body), Path::Xml { elements, attr }) => xml_get(body, elements, attr.as_deref()),
        // Paths are compiled for the reader's own kind.
        _ => None,
    }
}

fn xml_reader(body: &[u8]) -> quick_xml::Reader<&[u8]> {
    let mut r = quick_xml::Reader::from_reader(body);
    r.config_mut().trim_text(true);
    r
}

/// Whether `body` is one well-formed XML document with a root element.
fn xml_well_formed(body: &[u8]) -> bool {
    let mut r = xml_reader(body);
    let mut buf = Vec::new();
    let (mut depth, mut roots) = (0usize, 0usize);
    loop {
        match r.read_event_into(&mut buf) {
            Err(_) => return false,
            Ok(Event::Eof) => return depth == 0 && roots == 1,
            Ok(Event::Start(_)) => {
                roots += usize::from(depth == 0);
                depth += 1;
            }
            Ok(Event::Empty(_)) => roots += usize::from(depth == 0),
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            // Text outside the root element is not XML.
            Ok(Event::Text(_) | Event::CData(_)) if depth == 0 => return false,
            Ok(_) => {}
        }
        buf.clear();
    }
}

/// The text of the first element at `elements` (or its attribute `attr`), unescaped.
fn xml_get(body: &[u8], elements: &[String], attr: Option<&str>) -> Option<String> {
    let mut r = xml_reader(body);
    let mut buf = Vec::new();
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let at = |stack: &[Vec<u8>]| {
        stack.len() == elements.len()
            && stack
                .iter()
                .zip(elements)
                .all(|(a, b)| a.as_slice() == b.as_bytes())
    };
    let mut text: Option<String> = None;
    loop {
        let ev = r.read_event_into(&mut buf).ok()?;
        match ev {
            Event::Eof => return None,
            Event::Start(ref e) | Event::Empty(ref e) => {
                stack.push(e.local_name().as_ref().to_vec());
                if at(&stack) {
                    if let Some(a) = attr {
                        let v = e.try_get_attribute(a).ok()??;
                        return v.unescape_value().ok().map(|v| v.into_owned());
                    }
                    if matches!(ev, Event::Empty(_)) {
                        return None;
                    }
                    text = Some(String::new());
                }
                if matches!(ev, Event::Empty(_)) {
                    stack.pop();
                }
            }
            Event::Text(ref t) => {
                if let Some(s) = text.as_mut() {
                    s.push_str(&t.unescape().ok()?);
                }
            }
            Event::CData(ref c) => {
                if let Some(s) = text.as_mut() {
                    s.push_str(std::str::from_utf8(c).ok()?);
                }
            }
            Event::End(_) => {
                if at(&stack) {
                    return text.filter(|t| !t.is_empty());
                }
                stack.pop();
            }
            _ => {}
        }
        buf.clear();
    }
}
