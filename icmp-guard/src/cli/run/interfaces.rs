//! The interfaces a `run` service guards, and its watchdog: every second it checks that
//! each one still runs the guard, attaches again where it does not (a detach behind its
//! back, a re-created interface, bpffs unmounted), waits for an interface that was deleted
//! until it returns, and removes the links of deleted interfaces. On the way out it
//! detaches only what it attached itself: an interface it adopted stays as it was found.

use icmp_guard::{
    guard::{AttachOptions, Guard},
    host::preflight,
    net,
    policy::Policy,
};

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
    interfaces: Vec<Interface>,
    /// The last error of an attach, reported once.
    last_error: Option<String>,
}

impl Interfaces {
    pub fn new(names: &[String]) -> Self {
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
        Self {
            interfaces,
            last_error: None,
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.interfaces.iter().map(|i| i.name.clone()).collect()
    }

    /// Attaches to the interfaces in `names` that exist and adopts those already attached
    /// (this binary's program is swapped into their pinned links, `BPF_LINK_UPDATE`, no
    /// gap); the others are waited for. An error is reported (once while it repeats) and
    /// the interfaces concerned are tried again on the next tick.
    pub fn attach(
        &mut self,
        guard: &Guard,
        names: &[String],
        options: &AttachOptions,
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
                net::interface::ifindex(name).is_ok_and(|ifindex| !guard.has_link(ifindex))
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
                if self.last_error.as_ref() != Some(&message) {
                    complain!("error: {message}; trying again every second");
                    self.last_error = Some(message.clone());
                }
                return Err(message);
            }
        };
        self.last_error = None;
        for attached in attachment.interfaces {
            let mode = attached.mode.map_or("unknown", |mode| mode.as_str());
            match (attached.upgraded_from, attached.fallback.as_deref()) {
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
            if let Some(interface) = self.find(&attached.name) {
                interface.guarded = Some(attached.ifindex);
                // Once this service attached an interface, it is its own to detach.
                interface.owned |= !adopted;
            }
        }
        Ok(())
    }

    fn find(&mut self, name: &str) -> Option<&mut Interface> {
        self.interfaces
            .iter_mut()
            .find(|interface| interface.name == name)
    }

    /// One watchdog tick: bpffs still mounted, links of deleted interfaces removed, every
    /// interface still protected; attaches again where it is not (with `policy`, the
    /// file's last good policy, when the maps are new). True when every interface is
    /// protected now or waiting to return.
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
        let links = guard.links().unwrap_or_default();
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
                    None => "its link was removed (by a detach?)".to_owned(),
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
            } else if self.last_error.is_none() {
                say!("{}: {why}, attaching", interface.name);
            }
            again.push(interface.name.clone());
        }
        if again.is_empty() {
            return true;
        }
        let mut options = options.clone();
        if options.policy.is_none() {
            options.first_policy = policy.cloned();
        }
        self.attach(guard, &again, &options).is_ok()
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
