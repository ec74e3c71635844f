//! Where a connection is in its life: the TCP/UDP state machine (IPVS's DR "input only" table
//! plus NAT replies, see [`crate::conntrack`]'s docs) and each state's idle timeout.
//!
//! What this module must not do: touch the table, its lists or its gauges.

use std::time::Duration;

use crate::service::Timeouts;
use crate::wire::TcpFlags;

/// Where an entry is in its life; each state has its own idle timeout from [`Timeouts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnState {
    /// TCP, SYN seen (or a provisional entry for a mid-flow segment): `tcp_syn`.
    TcpSyn,
    /// TCP, ACK seen after the SYN: `tcp_established`.
    TcpEstablished,
    /// TCP, the client sent FIN: `tcp_fin_wait`.
    TcpFinWait,
    /// TCP, the client sent RST: `tcp_close`.
    TcpClose,
    /// UDP: `udp`.
    Udp,
}

impl ConnState {
    /// Number of states.
    pub const COUNT: usize = 5;
    /// All states, in list order.
    pub const ALL: [ConnState; Self::COUNT] = [
        ConnState::TcpSyn,
        ConnState::TcpEstablished,
        ConnState::TcpFinWait,
        ConnState::TcpClose,
        ConnState::Udp,
    ];

    /// Its idle timeout.
    pub const fn timeout(self, timeouts: &Timeouts) -> Duration {
        match self {
            ConnState::TcpSyn => timeouts.tcp_syn,
            ConnState::TcpEstablished => timeouts.tcp_established,
            ConnState::TcpFinWait => timeouts.tcp_fin_wait,
            ConnState::TcpClose => timeouts.tcp_close,
            ConnState::Udp => timeouts.udp,
        }
    }

    /// Whether IPVS counts an entry in this state as active (`ActiveConn`): TCP established or
    /// UDP. Every other TCP state is inactive (`InActConn`).
    #[inline(always)]
    pub const fn is_active(self) -> bool {
        matches!(self, ConnState::TcpEstablished | ConnState::Udp)
    }

    /// Name as IPVS shows it.
    pub const fn name(self) -> &'static str {
        match self {
            ConnState::TcpSyn => "SYN_RECV",
            ConnState::TcpEstablished => "ESTABLISHED",
            ConnState::TcpFinWait => "FIN_WAIT",
            ConnState::TcpClose => "CLOSE",
            ConnState::Udp => "UDP",
        }
    }

    /// The state of a new entry for a flow whose first segment seen has `flags`, or `None` when
    /// it gets no entry (a RST). See the module docs for mid-flow segments.
    pub const fn tcp_initial(flags: TcpFlags) -> Option<ConnState> {
        if flags.rst() {
            None
        } else if flags.fin() {
            Some(ConnState::TcpFinWait)
        } else {
            // A SYN, or a provisional entry that the next ACK confirms.
            Some(ConnState::TcpSyn)
        }
    }

    /// The state after the client sends a segment with `flags` (IPVS `tcp_states`, input only).
    #[must_use]
    #[inline(always)]
    pub const fn on_tcp(self, flags: TcpFlags) -> ConnState {
        if matches!(self, ConnState::Udp) {
            return self;
        }
        if flags.rst() {
            ConnState::TcpClose
        } else if flags.fin() {
            match self {
                ConnState::TcpClose => ConnState::TcpClose,
                _ => ConnState::TcpFinWait,
            }
        } else if flags.syn() && !flags.ack() {
            match self {
                // A SYN inside an established flow is a retransmission or a spoof: keep the
                // long timeout rather than let it shorten the entry.
                ConnState::TcpEstablished => ConnState::TcpEstablished,
                _ => ConnState::TcpSyn,
            }
        } else if flags.ack() {
            match self {
                ConnState::TcpSyn => ConnState::TcpEstablished,
                other => other,
            }
        } else {
            self
        }
    }
}

impl ConnState {
    /// Whether a client segment with `flags` opens a new connection on an entry in this state:
    /// a SYN (the state would start over in `TcpSyn`) on a closing entry. See the module docs.
    #[inline(always)]
    pub const fn reopened_by(self, flags: TcpFlags) -> bool {
        matches!(self, ConnState::TcpFinWait | ConnState::TcpClose)
            && matches!(self.on_tcp(flags), ConnState::TcpSyn)
    }

    /// The state after the real server sends a reply with `flags` (NAT, where the director sees
    /// both directions): a RST closes, a FIN starts closing, anything else keeps the state (the
    /// client's ACK, not the server's SYN-ACK, establishes the flow, so a server cannot hold an
    /// embryonic entry open for 15 minutes).
    #[must_use]
    pub const fn on_tcp_reply(self, flags: TcpFlags) -> ConnState {
        match self {
            ConnState::Udp | ConnState::TcpClose => self,
            _ if flags.rst() => ConnState::TcpClose,
            _ if flags.fin() => ConnState::TcpFinWait,
            _ => self,
        }
    }
}

/// A timeout in whole seconds, rounded up.
#[inline]
pub(super) fn timeout_secs(state: ConnState, timeouts: &Timeouts) -> u32 {
    let timeout = state.timeout(timeouts);
    let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

/// Idle for more than its timeout, in whole seconds: never early, at most a second late.
#[inline]
pub(super) fn is_expired(last_seen: u32, state: ConnState, now: u32, timeouts: &Timeouts) -> bool {
    now.saturating_sub(last_seen) > timeout_secs(state, timeouts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_refresh_and_close() {
        use ConnState::*;
        let (synack, ack, fin, rst) = (
            TcpFlags::SYN | TcpFlags::ACK,
            TcpFlags::ACK,
            TcpFlags::FIN | TcpFlags::ACK,
            TcpFlags::RST,
        );
        assert_eq!(TcpSyn.on_tcp_reply(synack), TcpSyn);
        assert_eq!(TcpEstablished.on_tcp_reply(ack), TcpEstablished);
        assert_eq!(TcpEstablished.on_tcp_reply(fin), TcpFinWait);
        assert_eq!(TcpFinWait.on_tcp_reply(ack), TcpFinWait);
        assert_eq!(TcpSyn.on_tcp_reply(rst), TcpClose);
        assert_eq!(TcpClose.on_tcp_reply(fin), TcpClose);
        assert_eq!(Udp.on_tcp_reply(rst), Udp);
    }

    #[test]
    fn tcp_state_machine() {
        use ConnState::*;
        let (syn, ack, fin, rst) = (
            TcpFlags::SYN,
            TcpFlags::ACK,
            TcpFlags::FIN | TcpFlags::ACK,
            TcpFlags::RST,
        );
        assert_eq!(ConnState::tcp_initial(syn), Some(TcpSyn));
        assert_eq!(
            ConnState::tcp_initial(ack),
            Some(TcpSyn),
            "mid-flow pickup is provisional"
        );
        assert_eq!(ConnState::tcp_initial(fin), Some(TcpFinWait));
        assert_eq!(ConnState::tcp_initial(rst), None);
        assert_eq!(TcpSyn.on_tcp(ack), TcpEstablished);
        assert_eq!(TcpSyn.on_tcp(syn), TcpSyn);
        assert_eq!(TcpEstablished.on_tcp(syn), TcpEstablished);
        assert_eq!(
            TcpEstablished.on_tcp(TcpFlags::ACK | TcpFlags::PSH),
            TcpEstablished
        );
        assert_eq!(TcpEstablished.on_tcp(fin), TcpFinWait);
        assert_eq!(TcpFinWait.on_tcp(ack), TcpFinWait);
        assert_eq!(TcpFinWait.on_tcp(syn), TcpSyn, "port reuse");
        assert!(TcpFinWait.reopened_by(syn) && TcpClose.reopened_by(syn));
        assert!(
            !TcpSyn.reopened_by(syn),
            "a retransmitted SYN keeps its server"
        );
        assert!(!TcpEstablished.reopened_by(syn));
        assert!(
            !TcpFinWait.reopened_by(syn | TcpFlags::ACK),
            "a SYN-ACK opens nothing"
        );
        assert!(!TcpFinWait.reopened_by(ack) && !TcpClose.reopened_by(fin));
        assert!(!Udp.reopened_by(syn));
        assert_eq!(TcpEstablished.on_tcp(rst), TcpClose);
        assert_eq!(TcpClose.on_tcp(fin), TcpClose);
        assert_eq!(TcpClose.on_tcp(ack), TcpClose);
        assert_eq!(TcpClose.on_tcp(syn), TcpSyn);
        assert_eq!(Udp.on_tcp(rst), Udp);
    }
}
