//! Who a request acts for: the tenant (sandbox or production) and the scopes a credential grants.
//! Plain values every layer names; parsing them from config or tokens is the caller's business.

use serde::Deserialize;

/// The account partition a credential and everything it creates belong to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Tenant {
    Sandbox,
    Production,
}

impl Tenant {
    pub fn as_str(self) -> &'static str {
        match self {
            Tenant::Sandbox => "sandbox",
            Tenant::Production => "production",
        }
    }

    /// The tenant named `name` (as [`Tenant::as_str`] writes it).
    pub fn from_name(name: &str) -> Option<Tenant> {
        match name {
            "sandbox" => Some(Tenant::Sandbox),
            "production" => Some(Tenant::Production),
            _ => None,
        }
    }
}

/// One permission a credential may hold.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Ping,
    Post,
    Status,
    Reports,
    Dev,
    /// Managing the tenant's OAuth clients (`/v1/admin/clients`).
    Admin,
}

impl Scope {
    /// Every scope, in the order the docs list them.
    pub const ALL: [Scope; 6] = [
        Scope::Ping,
        Scope::Post,
        Scope::Status,
        Scope::Reports,
        Scope::Dev,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ping => "ping",
            Scope::Post => "post",
            Scope::Status => "status",
            Scope::Reports => "reports",
            Scope::Dev => "dev",
            Scope::Admin => "admin",
        }
    }

    /// The scope named `s` (as in a token request's `scope` parameter).
    pub fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "ping" => Scope::Ping,
            "post" => Scope::Post,
            "status" => Scope::Status,
            "reports" => Scope::Reports,
            "dev" => Scope::Dev,
            "admin" => Scope::Admin,
            _ => return None,
        })
    }
}
