//! Which CPUs the director's threads run on.
//!
//! A busy-polling worker wants a CPU of its own: anything else the scheduler puts there (a
//! control thread waking for its once-a-second work, a health check) stops the worker for as
//! long as it runs, and every frame arriving meanwhile waits. So, as DPDK keeps its main lcore
//! apart from the forwarding lcores, the director can pin each worker to a CPU of
//! `[director] worker_cpus` and keep every other thread of the process on the CPUs left over
//! ([`restrict_every_thread`] early in start-up: the threads already running are moved, and
//! those spawned later inherit the mask).
//!
//! What it must not do: choose CPUs (control does, from the configuration) or run per packet.

use std::io;

/// The CPUs the calling thread may run on (its affinity mask), in increasing order; `None` if
/// it cannot be read.
pub fn allowed_cpus() -> Option<Vec<usize>> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()?
        .into_iter()
        .map(|core| core.id)
        .collect();
    cpus.sort_unstable();
    Some(cpus)
}

/// Lets the calling thread (and the threads it spawns from now on) run on `cpus` only.
/// Fails for an empty list, a CPU past `CPU_SETSIZE`, or one the kernel refuses (offline, or
/// outside the process's cpuset).
pub fn restrict_current_thread(cpus: &[usize]) -> io::Result<()> {
    // Thread id 0 is the calling thread.
    restrict_thread(0, &cpu_set(cpus)?)
}

/// Lets every thread of the process that is running now, and every thread spawned from them
/// later, run on `cpus` only: what [`restrict_current_thread`] does for one thread, for each
/// one listed in `/proc/self/task` (a thread that exits meanwhile is skipped). Fails as
/// [`restrict_current_thread`] does, or if the thread list cannot be read.
pub fn restrict_every_thread(cpus: &[usize]) -> io::Result<()> {
    let set = cpu_set(cpus)?;
    // The calling thread first, so whatever it spawns while the others are moved inherits the
    // new mask.
    restrict_thread(0, &set)?;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let Some(thread) = entry?
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        match restrict_thread(thread, &set) {
            Err(error) if error.raw_os_error() == Some(libc::ESRCH) => {}
            other => other?,
        }
    }
    Ok(())
}

fn cpu_set(cpus: &[usize]) -> io::Result<libc::cpu_set_t> {
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(1024);
    if cpus.is_empty() || cpus.iter().any(|&cpu| cpu >= max) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: cpu_set_t is plain data, valid when zeroed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: `cpu` < CPU_SETSIZE (checked above), so the bit lies inside `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    Ok(set)
}

fn restrict_thread(thread: libc::pid_t, set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: sched_setaffinity reads `size_of::<cpu_set_t>()` bytes of `set`, which is a
    // whole cpu_set_t.
    let result =
        unsafe { libc::sched_setaffinity(thread, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Pins the calling thread to `cpu`; whether the kernel accepted it.
pub fn pin_current_thread(cpu: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_can_narrow_its_mask_and_read_it_back() {
        let allowed = allowed_cpus().unwrap();
        assert!(!allowed.is_empty());
        let last = *allowed.last().unwrap();
        // In a thread of its own, so the test harness's threads keep their mask.
        std::thread::spawn(move || {
            assert!(pin_current_thread(last));
            assert_eq!(allowed_cpus().unwrap(), vec![last]);
            // A thread it spawns inherits the mask.
            let inherited = std::thread::spawn(|| allowed_cpus().unwrap())
                .join()
                .unwrap();
            assert_eq!(inherited, vec![last]);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn refuses_empty_and_impossible_masks() {
        assert!(restrict_current_thread(&[]).is_err());
        assert!(restrict_current_thread(&[1 << 20]).is_err());
        assert!(restrict_every_thread(&[]).is_err());
        assert!(restrict_every_thread(&[1 << 20]).is_err());
    }
}
