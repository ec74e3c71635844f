//! A worker adopting a new service table frees nothing on its own thread: the table it replaces
//! (Maglev lookup tables, backend lists) goes back to control through the retired channel, and
//! is freed there. A burst of reloads must not free Maglev tables in the hot loop.
//!
//! A counting global allocator watches the worker's side of the swap ([`worker::adopt_newest`])
//! while the worker holds the last reference to the table it replaces.

use std::sync::Arc;

use alloc_count::{deallocations_during, CountingAllocator};
use dataplane::counters::backend_counter_block;
use dataplane::testing::{self, backend, service};
use dataplane::{worker, Protocol, ServiceTable};
use scheduler::Algorithm;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// A table whose drop frees something (Maglev tables, backend lists).
fn maglev_table(generation: u64) -> Arc<ServiceTable> {
    let servers = (1..=3)
        .map(|n| {
            backend(
                &format!("198.51.100.{n}"),
                Some([2, 0, 0, 0, 0, n]),
                1,
                usize::from(n),
            )
        })
        .collect();
    Arc::new(testing::table(
        generation,
        vec![service(
            "192.0.2.10:80",
            Protocol::Tcp,
            Algorithm::Maglev,
            servers,
        )],
        vec![backend_counter_block(8)],
    ))
}

#[test]
fn the_counting_allocator_sees_a_table_freed() {
    let table = maglev_table(1);
    let frees = deallocations_during(|| drop(table));
    assert!(
        frees > 0,
        "dropping a table freed nothing: the counter does not count"
    );
}

#[test]
fn adopting_a_table_frees_nothing_on_the_worker() {
    let (publish, tables) = crossbeam_channel::bounded(4);
    let (retire, retired) = crossbeam_channel::bounded(4);
    // The worker holds the only reference to its current table, as after control replaced
    // its own copy: dropping it there would free it on the worker.
    let mut current = maglev_table(1);
    let mut parked = None;
    publish.send(maglev_table(2)).unwrap();
    publish.send(maglev_table(3)).unwrap();

    let mut adopted = false;
    let frees = deallocations_during(|| {
        adopted = worker::adopt_newest(&mut current, &mut parked, &tables, &retire);
    });
    assert!(adopted);
    assert_eq!(frees, 0, "the worker freed memory while adopting a table");
    assert_eq!(current.generation, 3, "the newest table is in use");
    let handed_back: Vec<u64> = retired.try_iter().map(|table| table.generation).collect();
    assert_eq!(
        handed_back,
        [1, 2],
        "every replaced table went back to control"
    );
}

#[test]
fn a_full_retired_channel_delays_adoption_instead_of_freeing_on_the_worker() {
    let (publish, tables) = crossbeam_channel::bounded(4);
    let (retire, retired) = crossbeam_channel::bounded(1);
    let mut current = maglev_table(1);
    let mut parked = None;
    for generation in 2..=4 {
        publish.send(maglev_table(generation)).unwrap();
    }

    let frees = deallocations_during(|| {
        assert!(worker::adopt_newest(
            &mut current,
            &mut parked,
            &tables,
            &retire
        ));
        // Nothing drained the channel: the worker keeps what it has.
        assert!(!worker::adopt_newest(
            &mut current,
            &mut parked,
            &tables,
            &retire
        ));
    });
    assert_eq!(frees, 0, "the worker freed memory with the channel full");
    assert_eq!(
        current.generation, 3,
        "adoption stopped at the full channel"
    );
    assert_eq!(parked.as_ref().map(|table| table.generation), Some(2));

    // Control drains; the worker catches up with the newest table, then hands back the rest.
    assert_eq!(retired.try_recv().unwrap().generation, 1);
    assert!(worker::adopt_newest(
        &mut current,
        &mut parked,
        &tables,
        &retire
    ));
    assert_eq!(current.generation, 4);
    assert_eq!(retired.try_recv().unwrap().generation, 2);
    assert!(!worker::adopt_newest(
        &mut current,
        &mut parked,
        &tables,
        &retire
    ));
    assert!(parked.is_none());
    assert_eq!(retired.try_recv().unwrap().generation, 3);
}
