//! Requests from the control socket: the socket's handler ([`answer`]) answers stats itself and
//! queues anything that changes state as a [`Command`] for the main loop, which executes it
//! ([`Director::execute`]): a reload, or a run-time change to one backend (weight, drain,
//! disable, enable) kept until the next reload.
//!
//! It must not change anything from the socket's thread: every change goes through the loop,
//! one at a time.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::bail;
use crossbeam_channel::Sender;
use director_proto::{Reply, Request};
use tracing::{info, warn};

use super::state::{Command, Shared};
use super::Director;
use crate::config::MAX_WEIGHT;
use crate::stats;
use crate::table::Override;

/// How long a control-socket request waits for the main loop.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(8);

impl Director {
    /// Executes a mutating request from the control socket.
    pub(super) fn execute(&mut self, request: Request) -> Reply {
        let outcome = match request {
            Request::Stats => return stats::answer(&self.shared, &Request::Stats),
            Request::Reload => self.reload(),
            Request::SetWeight {
                service,
                backend,
                weight,
            } => self.change_backend(
                &service,
                &backend,
                |change| change.weight = Some(weight),
                weight,
            ),
            Request::Drain { service, backend } => {
                self.change_backend(&service, &backend, |change| change.weight = Some(0), 0)
            }
            Request::Disable { service, backend } => {
                self.change_backend(&service, &backend, |change| change.disabled = true, 0)
            }
            Request::Enable { service, backend } => {
                self.change_backend(&service, &backend, |change| change.disabled = false, 0)
            }
        };
        match outcome {
            Ok(message) => {
                info!("{message}");
                Reply::Ok { message }
            }
            Err(error) => {
                let message = format!("{error:#}");
                warn!("control request refused: {message}");
                Reply::Error { message }
            }
        }
    }

    /// Applies a run-time change to one backend and publishes the resulting table.
    fn change_backend(
        &mut self,
        service: &str,
        backend: &str,
        change: impl FnOnce(&mut Override),
        weight: u32,
    ) -> anyhow::Result<String> {
        if weight > MAX_WEIGHT {
            bail!("weight {weight}: expected 0..={MAX_WEIGHT}");
        }
        let Some(configured) = self
            .config
            .services
            .iter()
            .find(|candidate| candidate.name == service)
        else {
            let names: Vec<&str> = self
                .config
                .services
                .iter()
                .map(|service| service.name.as_str())
                .collect();
            bail!("no service {service:?}; services: {}", names.join(", "));
        };
        let address: IpAddr = backend.parse().map_err(|_| {
            anyhow::anyhow!("backend {backend:?}: expected an IPv4 or IPv6 address")
        })?;
        if !configured
            .backends
            .iter()
            .any(|candidate| candidate.address == address)
        {
            bail!("service {service:?} has no backend {address}");
        }
        let id = (service.to_owned(), address);
        let mut next = self.overrides.get(&id).copied().unwrap_or_default();
        change(&mut next);
        let mut overrides = self.overrides.clone();
        overrides.insert(id.clone(), next);
        let gate = self.reuse_gate(&self.config);
        let built = self.builder.build(
            &self.config,
            &overrides,
            &self.down,
            &self.neighbours.backends,
            gate,
        )?;
        self.overrides = overrides;
        self.publish(built);
        let state = match next {
            Override { disabled: true, .. } => "disabled".to_owned(),
            Override {
                weight: Some(weight),
                ..
            } => format!("weight {weight}"),
            Override { weight: None, .. } => "enabled".to_owned(),
        };
        Ok(format!(
            "service {service}: backend {address}: {state} (until the next reload)"
        ))
    }
}

/// The stats socket's handler: stats are read directly; anything that changes state goes to
/// the main loop, which answers when done.
pub(super) fn answer(shared: &Shared, commands: &Sender<Command>, request: Request) -> Reply {
    if !request.is_mutating() {
        return stats::answer(shared, &request);
    }
    let (reply, answered) = crossbeam_channel::bounded(1);
    if commands
        .send_timeout(Command { request, reply }, COMMAND_TIMEOUT)
        .is_err()
    {
        return Reply::Error {
            message: "the director is busy or stopping; try again".to_owned(),
        };
    }
    answered
        .recv_timeout(COMMAND_TIMEOUT)
        .unwrap_or_else(|_| Reply::Error {
            message: "the director did not answer in time".to_owned(),
        })
}
