//! Panics in code that reads untrusted input, contained: redb on a damaged database file,
//! `wasmtime-wizer` on a hostile bundle. Such code trusts its input more than sandflow can,
//! and some input makes it panic instead of returning an error. Here a panic is caught,
//! kept off stderr (it is not a bug of sandflow's, and the user gets an error instead), and
//! handed back as its message.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

thread_local! {
    /// Whether this thread is inside `contain`: the panic hook stays quiet then.
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `call`; a panic inside it becomes `Err` with the panic's message.
pub(crate) fn contain<T>(call: impl FnOnce() -> T) -> Result<T, String> {
    static QUIET_HOOK: Once = Once::new();
    QUIET_HOOK.call_once(|| {
        // Chained, so that every other panic is reported as before.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINED.get() {
                previous(info);
            }
        }));
    });
    let outer = CONTAINED.replace(true);
    let result = std::panic::catch_unwind(AssertUnwindSafe(call));
    CONTAINED.set(outer);
    result.map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default()
    })
}

/// `future`, with each poll under [`contain`]: a panic ends it with `Err`.
pub(crate) async fn contain_async<T>(future: impl Future<Output = T>) -> Result<T, String> {
    let mut future = Box::pin(future);
    std::future::poll_fn(move |cx: &mut Context<'_>| {
        match contain(|| Pin::as_mut(&mut future).poll(cx)) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(contain(|| 7), Ok(7));
        assert_eq!(
            contain(|| panic!("bad input")),
            Err::<(), _>("bad input".into())
        );
        let code = 3;
        assert_eq!(
            contain(|| panic!("code {code}")),
            Err::<(), _>("code 3".into())
        );
    }

    #[tokio::test]
    async fn a_panic_across_an_await_becomes_its_message() {
        let ok = contain_async(async {
            tokio::task::yield_now().await;
            1
        });
        assert_eq!(ok.await, Ok(1));
        let panicked = contain_async(async {
            tokio::task::yield_now().await;
            panic!("after a yield")
        });
        assert_eq!(panicked.await, Err::<(), _>("after a yield".into()));
    }
}
