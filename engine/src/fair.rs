//! The pool's slots, shared fairly between tenants.
//!
//! Every attempt holds one slot of the instance pool while it runs. When attempts wait for
//! slots, first come first served would let a tenant that queued ten thousand attempts make
//! another tenant's one attempt wait for all of them. Instead, a freed slot goes to the
//! tenant with the fewest attempts running for its weight (`running / weight`), among those
//! waiting and under their cap of attempts at once; within a tenant, attempts go in the
//! order they asked. A tenant that asks alone gets every free slot, up to its cap.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Whose an attempt is, and what that tenant may take of the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Share {
    /// Its tenant; attempts of one tenant count together.
    pub tenant: Arc<str>,
    /// Its weight against other tenants when slots are contended, from 1.
    pub weight: u32,
    /// Attempts it may have running at once, over all its runs; `None` for no cap but the
    /// pool's size.
    pub max_attempts: Option<u32>,
}

impl Share {
    /// `tenant`'s share at weight 1 and no cap: what a worker runs a claimed attempt
    /// under, its tenant's share having been applied by the claim already.
    pub(crate) fn uncapped(tenant: &str) -> Self {
        Self {
            tenant: Arc::from(tenant),
            ..Self::default()
        }
    }
}

impl Default for Share {
    /// The one tenant of a command-line run: weight 1, no cap.
    fn default() -> Self {
        Self {
            tenant: Arc::from(""),
            weight: 1,
            max_attempts: None,
        }
    }
}

/// The slots of one pool; clones share them.
#[derive(Clone)]
pub(crate) struct FairSlots {
    state: Arc<Mutex<State>>,
}

struct State {
    free: usize,
    tenants: HashMap<Arc<str>, Tenant>,
}

#[derive(Default)]
struct Tenant {
    running: usize,
    weight: u32,
    cap: usize,
    waiting: VecDeque<oneshot::Sender<Slot>>,
}

impl Tenant {
    fn may_start(&self) -> bool {
        self.running < self.cap
    }
}

/// A slot held; given back when dropped.
pub(crate) struct Slot {
    /// `None` once given back.
    state: Option<Arc<Mutex<State>>>,
    tenant: Arc<str>,
}

impl FairSlots {
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                free: slots,
                tenants: HashMap::new(),
            })),
        }
    }

    /// Waits for a slot for `share`'s tenant. Dropping the future gives up its place, or
    /// the slot if one was already handed to it.
    pub(crate) async fn acquire(&self, share: &Share) -> Slot {
        let waiting = {
            let mut guard = lock(&self.state);
            let state = &mut *guard;
            let others_wait = state
                .tenants
                .iter()
                .any(|(name, t)| *name != share.tenant && !t.waiting.is_empty());
            let tenant = state.tenants.entry(share.tenant.clone()).or_default();
            tenant.weight = share.weight.max(1);
            tenant.cap = share.max_attempts.map_or(usize::MAX, |n| n.max(1) as usize);
            // Nobody of this tenant waits, it is under its cap and a slot is free: take it,
            // unless another tenant waits for it (then the turn decides).
            if tenant.waiting.is_empty() && tenant.may_start() && !others_wait && state.free > 0 {
                tenant.running += 1;
                state.free -= 1;
                return Slot {
                    state: Some(self.state.clone()),
                    tenant: share.tenant.clone(),
                };
            }
            let (send, receive) = oneshot::channel();
            tenant.waiting.push_back(send);
            hand_out(&self.state, state);
            receive
        };
        waiting
            .await
            .expect("a waiter's sender is only dropped after handing it a slot")
    }
}

/// Gives free slots to waiting attempts, each to the tenant whose turn it is.
fn hand_out(shared: &Arc<Mutex<State>>, state: &mut State) {
    while state.free > 0 {
        let next = state
            .tenants
            .iter()
            .filter(|(_, t)| !t.waiting.is_empty() && t.may_start())
            // running / weight, compared without division: a/b < c/d ⇔ a·d < c·b.
            .min_by(|(_, a), (_, b)| {
                (a.running as u64 * u64::from(b.weight))
                    .cmp(&(b.running as u64 * u64::from(a.weight)))
            })
            .map(|(name, _)| name.clone());
        let Some(name) = next else { return };
        let tenant = state.tenants.get_mut(&name).expect("just found");
        let waiter = tenant.waiting.pop_front().expect("filtered on waiting");
        tenant.running += 1;
        state.free -= 1;
        let slot = Slot {
            state: Some(shared.clone()),
            tenant: name,
        };
        if let Err(mut slot) = waiter.send(slot) {
            // The attempt stopped waiting: the slot goes back here, not in `Slot::drop`,
            // which would take the lock held here.
            slot.state = None;
            release(state, &slot.tenant);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(shared) = self.state.take() else {
            return;
        };
        let mut state = lock(&shared);
        release(&mut state, &self.tenant);
        hand_out(&shared, &mut state);
    }
}

/// Gives `tenant`'s slot back to the pool.
fn release(state: &mut State, tenant: &Arc<str>) {
    state.free += 1;
    if let Some(t) = state.tenants.get_mut(tenant) {
        t.running -= 1;
        // Forgotten when idle, so that the map holds only tenants with work.
        if t.running == 0 && t.waiting.is_empty() {
            state.tenants.remove(tenant);
        }
    }
}

/// The state stays consistent if a holder panicked: every change completes under the lock.
fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    fn share(tenant: &str, weight: u32, max_attempts: Option<u32>) -> Share {
        Share {
            tenant: Arc::from(tenant),
            weight,
            max_attempts,
        }
    }

    /// Polls `future` once: a slot is handed out synchronously when another is given back,
    /// so nothing else needs to run first.
    fn now<F: Future>(future: Pin<&mut F>) -> Option<F::Output> {
        match future.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        }
    }

    fn take(slots: &FairSlots, share: &Share) -> Slot {
        now(std::pin::pin!(slots.acquire(share))).expect("a slot is free")
    }

    #[test]
    fn a_freed_slot_goes_to_the_tenant_with_the_fewest_running_not_the_first_waiter() {
        let slots = FairSlots::new(2);
        let flood = share("flood", 1, None);
        let [first, _second] = [take(&slots, &flood), take(&slots, &flood)];
        let mut queued: Vec<_> = (0..5).map(|_| Box::pin(slots.acquire(&flood))).collect();
        assert!(queued.iter_mut().all(|q| now(q.as_mut()).is_none()));
        let quiet = share("quiet", 1, None);
        let mut quiet = Box::pin(slots.acquire(&quiet));
        assert!(now(quiet.as_mut()).is_none(), "the pool is full");
        drop(first);
        let quiet_slot = now(quiet.as_mut());
        assert!(quiet_slot.is_some(), "quiet went first");
        assert!(now(queued[0].as_mut()).is_none());
    }

    #[test]
    fn weights_divide_contended_slots_and_caps_hold() {
        let slots = FairSlots::new(4);
        let (heavy, light) = (share("heavy", 3, None), share("light", 1, None));
        // Fill the pool with a third tenant's attempts, queue both, then free the pool.
        let blockers: Vec<Slot> = (0..4).map(|_| take(&slots, &share("x", 1, None))).collect();
        let mut waiting: Vec<_> = (0..8)
            .flat_map(|_| {
                [
                    Box::pin(slots.acquire(&heavy)),
                    Box::pin(slots.acquire(&light)),
                ]
            })
            .collect();
        assert!(waiting.iter_mut().all(|w| now(w.as_mut()).is_none()));
        drop(blockers);
        let granted: Vec<Slot> = waiting.iter_mut().filter_map(|w| now(w.as_mut())).collect();
        let heavy_count = granted.iter().filter(|s| &*s.tenant == "heavy").count();
        assert_eq!((granted.len(), heavy_count), (4, 3));

        let capped = FairSlots::new(4);
        let one = share("one", 1, Some(1));
        let _held = take(&capped, &one);
        let mut second = Box::pin(capped.acquire(&one));
        assert!(
            now(second.as_mut()).is_none(),
            "capped at one, though slots are free"
        );
        let _other = take(&capped, &share("two", 1, None));
    }

    #[test]
    fn a_waiter_that_gives_up_leaves_its_slot_to_the_next() {
        let slots = FairSlots::new(1);
        let a = share("a", 1, None);
        let held = take(&slots, &a);
        let mut gives_up = Box::pin(slots.acquire(&a));
        assert!(now(gives_up.as_mut()).is_none());
        let b = share("b", 1, None);
        let mut next = Box::pin(slots.acquire(&b));
        assert!(now(next.as_mut()).is_none());
        drop(gives_up);
        drop(held);
        let next_slot = now(next.as_mut());
        assert!(next_slot.is_some());
        assert_eq!(lock(&slots.state).free, 0);
    }
}
