//! Which interfaces `run` protects: the names it was given, or the interfaces that match its
//! `--interfaces` rules now; and whether each of them runs the guard.

use icmp_guard::{
    guard::{self, Guard},
    net::{
        self,
        select::{self, Rule},
    },
};

/// The interfaces `run` was asked to protect.
#[derive(Clone, Debug)]
pub enum Selection {
    /// By name: each must exist, and one that disappears stops the service (for its
    /// manager to restart it) unless it comes back under the same name.
    Names(Vec<String>),
    /// By rule, evaluated again every second.
    Rules(Vec<Rule>),
}

impl Selection {
    pub fn new(names: &[String], rules: &[Rule]) -> Self {
        if rules.is_empty() {
            Self::Names(names.to_vec())
        } else {
            Self::Rules(rules.to_vec())
        }
    }

    /// The interfaces to attach to at start. Names must exist; rules may match nothing yet
    /// (a host still bringing its network up), which readiness reports.
    pub fn resolve_at_start(&self) -> anyhow::Result<Vec<(String, u32)>> {
        Ok(self.resolve()?)
    }

    /// The interfaces the selection means now, as (name, ifindex).
    pub fn resolve(&self) -> icmp_guard::error::Result<Vec<(String, u32)>> {
        match self {
            Self::Names(names) => guard::resolve_interfaces(names),
            Self::Rules(rules) => Ok(select::select(rules)?),
        }
    }

    pub fn by_rule(&self) -> bool {
        matches!(self, Self::Rules(_))
    }

    /// How the operator asked, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Names(names) => names.join(", "),
            Self::Rules(rules) => format!("--interfaces {}", select::describe(rules)),
        }
    }

    /// `Ok` when the selection means at least one interface now and each of them runs the
    /// guard; else the first reason why not, in one line.
    pub fn ready(&self, guard: &Guard) -> Result<(), String> {
        let targets = self.resolve().map_err(|err| err.to_string())?;
        if targets.is_empty() {
            return Err(match self {
                Self::Rules(rules) if rules.contains(&Rule::Auto) => format!(
                    "no interface matches {}: none carries a default route yet",
                    self.describe()
                ),
                _ => format!("no interface matches {}", self.describe()),
            });
        }
        for (name, ifindex) in &targets {
            if let Some(why) = unprotected(guard, name, *ifindex) {
                return Err(format!("{name} is not protected: {why}"));
            }
        }
        Ok(())
    }
}

/// Whether the interface `name` with `ifindex` no longer exists (deleted, or re-created
/// under another index).
pub fn gone(name: &str, ifindex: u32) -> bool {
    net::interface::ifindex(name).map_or(true, |now| now != ifindex)
}

/// Why an interface `run` protects is no longer protected, if it is not.
pub fn unprotected(guard: &Guard, name: &str, ifindex: u32) -> Option<String> {
    match net::interface::ifindex(name) {
        Err(_) => return Some("the interface is gone".to_owned()),
        Ok(now) if now != ifindex => {
            return Some(format!(
                "the interface was re-created (ifindex {ifindex} is now {now})"
            ));
        }
        Ok(_) => {}
    }
    let links = match guard.links() {
        Ok(links) => links,
        Err(err) if err.is_not_attached() => return Some("the guard is not attached".to_owned()),
        Err(err) => return Some(format!("its pinned link cannot be read: {err}")),
    };
    match links.iter().find(|link| link.ifindex == ifindex) {
        None => Some("its link is not pinned (not attached yet, or detached)".to_owned()),
        Some(link) if link.interface_gone => Some("the interface is gone".to_owned()),
        Some(link) if link.mode.is_none() => {
            Some("the kernel no longer runs the guard there".to_owned())
        }
        Some(_) => None,
    }
}
