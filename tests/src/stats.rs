//! Reading `lbstat --json` output (kept as `serde_json::Value`: the lab checks the documented
//! field names, and a missing one fails the test with the JSON it got).

use std::collections::BTreeMap;

use serde_json::Value;

/// One backend's counters, with its service's name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// Service name.
    pub service: String,
    /// Backend address.
    pub address: String,
    /// Current weight (the runtime one, after `director backend weight/drain`).
    pub weight: u64,
    /// Flows open now (`None` if this lbstat does not report it).
    pub active_connections: Option<u64>,
    /// Flows closing or closed but still tracked (`None` if this lbstat does not report it).
    pub inactive_connections: Option<u64>,
    /// New flows scheduled to it.
    pub connections_total: u64,
    /// Frames forwarded to it.
    pub packets_in: u64,
    /// Bytes forwarded to it.
    pub bytes_in: u64,
    /// Frames from it through the director.
    pub packets_out: u64,
    /// Bytes from it through the director.
    pub bytes_out: u64,
}

/// Every backend of every service.
pub fn backends(stats: &Value) -> Vec<Backend> {
    let mut out = Vec::new();
    for service in array(stats, "services") {
        let name = service["name"].as_str().unwrap_or_default().to_owned();
        for backend in array(service, "backends") {
            out.push(Backend {
                service: name.clone(),
                address: backend["address"]
                    .as_str()
                    .unwrap_or_else(|| panic!("backend without an address: {backend}"))
                    .to_owned(),
                weight: number(backend, "weight"),
                active_connections: backend["active_connections"].as_u64(),
                inactive_connections: backend["inactive_connections"].as_u64(),
                connections_total: number(backend, "connections_total"),
                packets_in: number(backend, "packets_in"),
                bytes_in: number(backend, "bytes_in"),
                packets_out: number(backend, "packets_out"),
                bytes_out: number(backend, "bytes_out"),
            });
        }
    }
    out
}

/// One service as lbstat shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// Name.
    pub name: String,
    /// Scheduler name as lbstat prints it.
    pub scheduler: String,
    /// Backend addresses, in lbstat's order.
    pub backends: Vec<String>,
}

/// Every service.
pub fn services(stats: &Value) -> Vec<Service> {
    array(stats, "services")
        .iter()
        .map(|service| Service {
            name: service["name"].as_str().unwrap_or_default().to_owned(),
            scheduler: service["scheduler"].as_str().unwrap_or_default().to_owned(),
            backends: array(service, "backends")
                .iter()
                .map(|b| b["address"].as_str().unwrap_or_default().to_owned())
                .collect(),
        })
        .collect()
}

/// The backend `address` of service `service`, if lbstat lists it.
pub fn backend(stats: &Value, service: &str, address: &str) -> Option<Backend> {
    backends(stats)
        .into_iter()
        .find(|b| b.service == service && b.address == address)
}

/// Sum of the workers' `rx_packets`.
pub fn workers_rx_packets(stats: &Value) -> u64 {
    array(stats, "workers")
        .iter()
        .map(|w| number(w, "rx_packets"))
        .sum()
}

/// Sum of the workers' `rx_bytes`.
pub fn workers_rx_bytes(stats: &Value) -> u64 {
    array(stats, "workers")
        .iter()
        .map(|w| number(w, "rx_bytes"))
        .sum()
}

/// Sum of the workers' `tx_packets`.
pub fn workers_tx_packets(stats: &Value) -> u64 {
    array(stats, "workers")
        .iter()
        .map(|w| number(w, "tx_packets"))
        .sum()
}

/// One of the workers' `counters` (`connections_created`, ...) summed; panics if absent.
pub fn worker_counter(stats: &Value, name: &str) -> u64 {
    array(stats, "workers")
        .iter()
        .map(|worker| number(&worker["counters"], name))
        .sum()
}

/// The workers' drop counters summed by reason (every reason listed, zero or not).
pub fn worker_drops(stats: &Value) -> BTreeMap<String, u64> {
    let mut drops = BTreeMap::new();
    for worker in array(stats, "workers") {
        let map = worker["drops"]
            .as_object()
            .unwrap_or_else(|| panic!("worker without a drops object: {worker}"));
        for (reason, n) in map {
            *drops.entry(reason.clone()).or_insert(0) += n.as_u64().unwrap_or(0);
        }
    }
    drops
}

/// One of the XDP classifier's counters (`redirected`, `no_service`, ...); panics if absent.
pub fn xdp_counter(stats: &Value, name: &str) -> u64 {
    stats["xdp"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("lbstat JSON has no xdp.{name}: {}", stats["xdp"]))
}

fn array<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("lbstat JSON has no array {key:?}: {v}"))
}

fn number(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("lbstat JSON has no number {key:?}: {v}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_shape() {
        let stats: Value = serde_json::from_str(
            r#"{"uptime_seconds": 1.5,
                "services": [{"name": "web", "vip": "192.0.2.10", "port": 80, "protocol": "tcp",
                  "scheduler": "rr", "forwarding": "dr", "backends": [
                  {"address": "192.0.2.11", "port": 80, "weight": 1, "mac": null,
                   "connections_total": 3, "packets_in": 9, "bytes_in": 900,
                   "packets_out": 0, "bytes_out": 0}]}],
                "workers": [{"worker": 0, "interface": "eth0", "queue": 0, "rx_packets": 9,
                  "rx_bytes": 900, "tx_packets": 9, "tx_bytes": 900,
                  "drops": {"bad_checksum": 0, "tx_ring_full": 1}, "counters": {}}],
                "xdp": {"redirected": 9, "no_service": 4}}"#,
        )
        .unwrap();
        let b = backends(&stats);
        assert_eq!(b.len(), 1);
        assert_eq!(
            (
                b[0].address.as_str(),
                b[0].connections_total,
                b[0].packets_in
            ),
            ("192.0.2.11", 3, 9)
        );
        assert_eq!((b[0].weight, b[0].active_connections), (1, None));
        let services = services(&stats);
        assert_eq!(services[0].scheduler, "rr");
        assert_eq!(services[0].backends, ["192.0.2.11"]);
        assert_eq!(backend(&stats, "web", "192.0.2.11").unwrap().packets_in, 9);
        assert!(backend(&stats, "web", "192.0.2.12").is_none());
        assert_eq!(workers_rx_packets(&stats), 9);
        assert_eq!(worker_drops(&stats)["tx_ring_full"], 1);
        assert_eq!(xdp_counter(&stats, "redirected"), 9);
    }
}
