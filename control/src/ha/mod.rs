//! High availability between directors: which one serves, and what the others know when it
//! stops.
//!
//! - [`vrrp`]: who holds the VIPs. VRRPv3 (RFC 5798) with other directors or keepalived elects a
//!   master per virtual router; the master adds the VIPs and announces them (gratuitous ARP), a
//!   backup removes them. The main loop hears of each change as an [`vrrp::HaEvent`].
//! - [`sync`]: connection state follows. The master's workers export their connection entries
//!   and persistence templates, and the sync daemon sends them to the backups over UDP (as the
//!   IPVS sync daemon does), so a failover keeps established flows on their real servers. Its
//!   role (send or apply) is switched by control on VRRP transitions; the two modules do not
//!   import each other.
//!
//! What this module must not do: touch frames (the workers do that, fed through
//! [`dataplane::sync`]'s queues), or make a worker wait for either protocol.

pub mod sync;
pub mod vrrp;
