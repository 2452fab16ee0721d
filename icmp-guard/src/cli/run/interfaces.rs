//! Which interfaces `run` protects and its watchdog. The interfaces are the names it was
//! given, or those that match its `--interfaces` rules now ([`Selection`]). Every second the
//! watchdog checks that bpffs is still mounted (mounting it again when someone unmounted
//! it), removes the links of deleted interfaces, and attaches again where an interface no
//! longer runs the guard (a detach behind its back, a re-created interface). A named
//! interface that is deleted is waited for and attached again when it returns; one chosen by
//! rule is let go. On the way out `run` detaches only what it attached itself: an interface
//! it adopted stays as it was found.

use icmp_guard::{
    guard::{self, AttachOptions, Guard},
    host::preflight,
    net::{
        self,
        select::{self, Rule},
    },
    policy::Policy,
};

/// The interfaces `run` was asked to protect.
#[derive(Clone, Debug)]
pub enum Selection {
    /// By name: each must exist at start; one that is deleted later is waited for.
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

    /// The interfaces the selection means now, as (name, ifindex). By name, every one must
    /// exist; rules may match nothing yet (a host still bringing its network up), which
    /// readiness reports.
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
    let links = match guard.guarded() {
        Ok(links) => links,
        Err(err) if err.is_not_attached() => return Some("the guard is not attached".to_owned()),
        Err(err) => return Some(format!("its pinned link cannot be read: {err}")),
    };
    match links.iter().find(|link| link.ifindex == ifindex) {
        None => Some(
            "neither its link nor its place in a libxdp dispatcher is recorded (not attached yet, or detached)"
                .to_owned(),
        ),
        Some(link) if link.interface_gone => Some("the interface is gone".to_owned()),
        Some(link) if link.mode.is_none() => {
            Some("the kernel no longer runs the guard there".to_owned())
        }
        Some(_) => None,
    }
}

/// One interface of the service.
struct Interface {
    name: String,
    /// Its ifindex when it is guarded, `None` while the service waits for it.
    guarded: Option<u32>,
    /// This service attached it (else it adopted a guard that was there before).
    owned: bool,
}

/// The service's interfaces.
pub struct Interfaces {
    selection: Selection,
    interfaces: Vec<Interface>,
    /// The last error of an attach, reported once while it repeats.
    last_error: Option<String>,
}

impl Interfaces {
    pub fn new(selection: Selection) -> Self {
        let interfaces = match &selection {
            Selection::Names(names) => {
                let mut interfaces: Vec<Interface> = Vec::new();
                for name in names {
                    if !interfaces.iter().any(|interface| interface.name == *name) {
                        interfaces.push(Interface {
                            name: name.clone(),
                            guarded: None,
                            owned: false,
                        });
                    }
                }
                interfaces
            }
            Selection::Rules(_) => Vec::new(),
        };
        Self {
            selection,
            interfaces,
            last_error: None,
        }
    }

    /// The names of the interfaces it follows now (by rule: those matched so far).
    pub fn names(&self) -> Vec<String> {
        self.interfaces.iter().map(|i| i.name.clone()).collect()
    }

    /// The interfaces guarded now, as (name, ifindex).
    pub fn guarded(&self) -> Vec<(String, u32)> {
        self.interfaces
            .iter()
            .filter_map(|interface| Some((interface.name.clone(), interface.guarded?)))
            .collect()
    }

    /// Attaches to the interfaces in `names` that exist and adopts those already attached
    /// (this binary's program is swapped into their pinned links, `BPF_LINK_UPDATE`, no
    /// gap); the others are waited for. An error is returned; with `retrying` it is also
    /// reported (once while it repeats), as the interfaces concerned are tried again on the
    /// next tick — without, the caller reports it (a start-up by name ends on it).
    pub fn attach(
        &mut self,
        guard: &Guard,
        names: &[String],
        options: &AttachOptions,
        retrying: bool,
    ) -> Result<(), String> {
        let mut present = Vec::new();
        for name in names {
            match net::interface::ifindex(name) {
                Ok(_) => present.push(name.clone()),
                Err(_) => {
                    if let Some(interface) = self.find(name)
                        && interface.guarded.take().is_some()
                    {
                        complain!(
                            "error: {name} is no longer protected: the interface is gone; waiting for it to come back"
                        );
                    } else {
                        say!("{name} does not exist (yet): waiting for it to appear");
                    }
                }
            }
        }
        if present.is_empty() {
            return Ok(());
        }
        let fresh: Vec<&str> = present
            .iter()
            .filter(|name| {
                net::interface::ifindex(name).is_ok_and(|ifindex| !guard.guards(ifindex))
            })
            .map(String::as_str)
            .collect();
        if !fresh.is_empty() {
            say!("attaching to {}...", fresh.join(", "));
        }
        let attachment = match guard.attach(&present, options) {
            Ok(attachment) => attachment,
            Err(err) => {
                let message = err.to_string();
                if retrying && self.last_error.as_ref() != Some(&message) {
                    complain!("error: {message}; trying again every second");
                    self.last_error = Some(message.clone());
                }
                return Err(message);
            }
        };
        self.last_error = None;
        for attached in attachment.interfaces {
            let mode = attached.mode.map_or("unknown", |mode| mode.as_str());
            match (&attached.multiprog, attached.already) {
                (Some(joined), true) => say!(
                    "{}: already attached as program {} of {} in libxdp dispatcher {}, adopting the running guard as it is (program {}; {mode} mode)",
                    attached.name,
                    joined.position + 1,
                    joined.programs,
                    joined.dispatcher_id,
                    attached.program_id
                ),
                (Some(joined), false) => say!(
                    "attached to {} (ifindex {}) in {mode} mode as program {} of {} in libxdp dispatcher {} (program {})",
                    attached.name,
                    attached.ifindex,
                    joined.position + 1,
                    joined.programs,
                    joined.dispatcher_id,
                    attached.program_id
                ),
                (None, _) => {}
            }
            match (attached.upgraded_from, attached.fallback.as_deref()) {
                _ if attached.multiprog.is_some() => {}
                (Some(old), _) => say!(
                    "{}: already attached, adopting the running guard (program {old} replaced by {} in its link, no gap; {mode} mode)",
                    attached.name,
                    attached.program_id
                ),
                (None, Some(reason)) => say!(
                    "attached to {} (ifindex {}) in {mode} mode: native XDP was refused ({reason})",
                    attached.name,
                    attached.ifindex
                ),
                (None, None) => say!(
                    "attached to {} (ifindex {}) in {mode} mode",
                    attached.name,
                    attached.ifindex
                ),
            }
            let adopted = attached.upgraded_from.is_some() || attached.already;
            let interface = match self.find(&attached.name) {
                Some(interface) => interface,
                None => {
                    self.interfaces.push(Interface {
                        name: attached.name.clone(),
                        guarded: None,
                        owned: false,
                    });
                    let last = self.interfaces.len() - 1;
                    &mut self.interfaces[last]
                }
            };
            interface.guarded = Some(attached.ifindex);
            // Once this service attached an interface, it is its own to detach.
            interface.owned |= !adopted;
        }
        Ok(())
    }

    fn find(&mut self, name: &str) -> Option<&mut Interface> {
        self.interfaces
            .iter_mut()
            .find(|interface| interface.name == name)
    }

    /// One watchdog tick (see the module); `policy` is the policy file's last good policy,
    /// for maps that are new (bpffs remounted, the last link detached behind our back).
    /// True when every interface is protected now or waited for.
    pub fn watch(
        &mut self,
        guard: &Guard,
        options: &AttachOptions,
        policy: Option<&Policy>,
    ) -> bool {
        let pin_dir = guard.pins().root();
        if preflight::require_bpffs(pin_dir).is_err() {
            complain!(
                "error: bpffs is no longer mounted at {} (someone unmounted it: every pin, and with them the guard's links, went with it); mounting it again",
                preflight::BPFFS_ROOT
            );
            match preflight::ensure_bpffs(pin_dir) {
                Ok(true) => say!("mounted bpffs at {}", preflight::BPFFS_ROOT),
                Ok(false) => {}
                Err(err) => {
                    complain!("error: {err}");
                    return false;
                }
            }
            for interface in &mut self.interfaces {
                interface.guarded = None;
            }
        }
        match guard.remove_gone_links() {
            Ok(removed) => {
                for ifindex in removed {
                    say!("removed the link of a deleted interface (ifindex {ifindex})");
                }
            }
            Err(err) => complain!("error: removing the links of deleted interfaces: {err}"),
        }
        match guard.restore_stale_traces() {
            Ok(restored) => {
                for name in restored {
                    say!(
                        "{name}: swapped the production program back in place of a stale trace build (its `icmp-guard trace` was killed)"
                    );
                }
            }
            Err(err) => complain!("error: swapping back a stale trace build: {err}"),
        }
        let again = match self.selection.clone() {
            Selection::Names(_) => self.lost_by_name(guard),
            Selection::Rules(_) => match self.lost_by_rule(guard) {
                Some(again) => again,
                None => return false,
            },
        };
        if again.is_empty() {
            return self.last_error.is_none();
        }
        let mut options = options.clone();
        if options.policy.is_none() {
            options.first_policy = policy.cloned();
        }
        self.attach(guard, &again, &options, true).is_ok()
    }

    /// By name: the interfaces to attach again; those deleted are waited for.
    fn lost_by_name(&mut self, guard: &Guard) -> Vec<String> {
        let links = guard.guarded().unwrap_or_default();
        let waiting_quietly = self.last_error.is_some();
        let mut again = Vec::new();
        for interface in &mut self.interfaces {
            let now = net::interface::ifindex(&interface.name).ok();
            let why = match (interface.guarded, now) {
                (None, None) => continue,
                (Some(_), None) => {
                    interface.guarded = None;
                    complain!(
                        "error: {} is no longer protected: the interface is gone; waiting for it to come back",
                        interface.name
                    );
                    continue;
                }
                (None, Some(_)) => "it is there".to_owned(),
                (Some(old), Some(now)) if old != now => {
                    format!("the interface was re-created (ifindex {old} is now {now})")
                }
                (Some(_), Some(now)) => match links.iter().find(|link| link.ifindex == now) {
                    None => "its link, or its place in a dispatcher, was removed (by a detach?)"
                        .to_owned(),
                    Some(link) if link.mode.is_none() => {
                        "the kernel no longer runs the guard there".to_owned()
                    }
                    Some(_) => continue,
                },
            };
            if interface.guarded.is_some() {
                complain!(
                    "error: {} is no longer protected: {why}; attaching again",
                    interface.name
                );
            } else if !waiting_quietly {
                say!("{}: {why}, attaching", interface.name);
            }
            again.push(interface.name.clone());
        }
        again
    }

    /// By rule: the rules evaluated again. Interfaces that came to match are to be
    /// attached, those that disappeared are let go (their links go with them), and those
    /// that lost their guard behind our back are to be attached again. `None` when the
    /// rules cannot be evaluated now (reported once).
    fn lost_by_rule(&mut self, guard: &Guard) -> Option<Vec<String>> {
        let matching = match self.selection.resolve() {
            Ok(matching) => matching,
            Err(err) => {
                let message = format!("evaluating {}: {err}", self.selection.describe());
                if self.last_error.as_ref() != Some(&message) {
                    complain!("error: {message}");
                    self.last_error = Some(message);
                }
                return None;
            }
        };
        self.interfaces.retain(|interface| {
            let gone = interface.guarded.is_some_and(|ifindex| {
                net::interface::ifindex(&interface.name).map_or(true, |now| now != ifindex)
            });
            if gone {
                say!(
                    "{} is gone (deleted, or renamed): no longer following it",
                    interface.name
                );
            }
            !gone
        });
        let mut again = Vec::new();
        for (name, ifindex) in matching {
            let known = self
                .interfaces
                .iter()
                .any(|interface| interface.guarded == Some(ifindex));
            if !known {
                say!("{name} matches {}", self.selection.describe());
                again.push(name);
            } else if unprotected(guard, &name, ifindex).is_some() {
                complain!("error: {name} is no longer protected; attaching again");
                again.push(name);
            }
        }
        Some(again)
    }

    /// The interfaces this service attached itself and that are guarded now: what it
    /// detaches on its way out.
    pub fn owned(&self) -> Vec<(String, u32)> {
        self.interfaces
            .iter()
            .filter(|interface| interface.owned)
            .filter_map(|interface| Some((interface.name.clone(), interface.guarded?)))
            .collect()
    }

    /// The interfaces it adopted: left as found.
    pub fn adopted(&self) -> Vec<String> {
        self.interfaces
            .iter()
            .filter(|interface| !interface.owned && interface.guarded.is_some())
            .map(|interface| interface.name.clone())
            .collect()
    }
}
