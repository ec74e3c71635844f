//! Where the workers and the rest of the process run (`[director] worker_cpus`): checking the
//! configured CPUs against the process's affinity mask and confining the control threads to
//! the CPUs left over. It only plans and pins; it starts no thread.

use anyhow::{bail, Context as _};
use dataplane::affinity;
use tracing::{info, warn};

use crate::config::DirectorConfig;

/// Where the workers and the rest of the process run (`[director] worker_cpus`).
pub(super) struct CpuPlan {
    /// Worker `i` runs on `workers[i % len]`; empty if the affinity mask could not be read
    /// (the workers are then left where the scheduler puts them).
    workers: Vec<usize>,
}

impl CpuPlan {
    /// Checks `worker_cpus` against the CPUs this process may run on and, when some are left
    /// over, confines every thread of the process (the signal waiter, already running) and
    /// every thread spawned from now on (the whole control side) to those: a busy-polling
    /// worker then has its CPU to itself, as DPDK keeps its main lcore off the forwarding
    /// lcores. Without `worker_cpus` the workers take the allowed CPUs in turn and nothing is
    /// confined. Called first in start-up, before the workers are spawned.
    pub(super) fn apply(director: &DirectorConfig) -> anyhow::Result<Self> {
        let Some(allowed) = affinity::allowed_cpus() else {
            if director.worker_cpus.is_empty() {
                warn!("cannot read the process's CPU affinity: workers are not pinned");
                return Ok(CpuPlan {
                    workers: Vec::new(),
                });
            }
            bail!("director.worker_cpus: cannot read the CPUs this process may run on");
        };
        if director.worker_cpus.is_empty() {
            return Ok(CpuPlan { workers: allowed });
        }
        for (index, cpu) in director.worker_cpus.iter().enumerate() {
            if !allowed.contains(cpu) {
                bail!(
                    "director.worker_cpus[{index}] = {cpu}: this process may not run on CPU \
                     {cpu} (it may run on {})",
                    cpu_list(&allowed)
                );
            }
        }
        let control: Vec<usize> = allowed
            .iter()
            .copied()
            .filter(|cpu| !director.worker_cpus.contains(cpu))
            .collect();
        if control.is_empty() {
            info!(
                cpus = %cpu_list(&allowed),
                "every CPU this process may use runs a worker: control threads share them"
            );
        } else {
            affinity::restrict_every_thread(&control).with_context(|| {
                format!("confining control threads to CPUs {}", cpu_list(&control))
            })?;
            info!(
                workers = %cpu_list(&director.worker_cpus),
                control = %cpu_list(&control),
                "CPUs"
            );
        }
        Ok(CpuPlan {
            workers: director.worker_cpus.clone(),
        })
    }

    /// The CPU worker `index` is pinned to, if any.
    pub(super) fn worker_cpu(&self, index: usize) -> Option<usize> {
        if self.workers.is_empty() {
            return None;
        }
        self.workers.get(index % self.workers.len()).copied()
    }
}

/// CPU numbers as a comma-separated list.
fn cpu_list(cpus: &[usize]) -> String {
    let names: Vec<String> = cpus.iter().map(usize::to_string).collect();
    names.join(",")
}
