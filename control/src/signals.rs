//! Process signals as messages: SIGINT/SIGTERM (stop) and SIGHUP (reload) are blocked in every
//! thread and taken synchronously by one thread with `sigwait`, which forwards them on a
//! channel. No async-signal-safety puzzles, and the main loop just selects on the channel.

use std::io;
use std::thread;

use crossbeam_channel::{Receiver, Sender};

/// A signal the director acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT or SIGTERM: shut down cleanly.
    Stop,
    /// SIGHUP: re-read the configuration.
    Reload,
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the set we own, which is fully initialised by
    // sigemptyset before use.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGINT);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        libc::sigaddset(&raw mut set, libc::SIGHUP);
        set
    }
}

/// Blocks the signals in the calling thread (and so in every thread it spawns afterwards) and
/// starts the thread that receives them. Call it first thing in `main`, before other threads.
pub fn install() -> io::Result<Receiver<Signal>> {
    let set = signal_set();
    // SAFETY: `set` is a valid, initialised signal set; the old mask is not needed.
    let error =
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut()) };
    if error != 0 {
        return Err(io::Error::from_raw_os_error(error));
    }
    let (sender, receiver) = crossbeam_channel::bounded(8);
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || wait_for_signals(&set, &sender))?;
    Ok(receiver)
}

fn wait_for_signals(set: &libc::sigset_t, sender: &Sender<Signal>) {
    loop {
        let mut number = 0;
        // SAFETY: `set` is valid and `number` is a valid place for the result.
        if unsafe { libc::sigwait(set, &raw mut number) } != 0 {
            continue;
        }
        let signal = if number == libc::SIGHUP {
            Signal::Reload
        } else {
            Signal::Stop
        };
        if sender.send(signal).is_err() {
            return;
        }
    }
}
