//! How a service lives and stops: its instance ID, the shutdown signal, and [`run`], which
//! serves the HTTP router beside the service's background loops until shutdown and then stops
//! both: the server stops accepting and gives in-flight requests a bounded time, the loops
//! finish their step and hand back what they hold (the poller's lease, a recomputer's claims).
//!
//! One type carries "stop" everywhere: tokio-util's [`CancellationToken`], which every loop
//! selects on and which tests cancel directly.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;
pub use tokio_util::sync::CancellationToken;

/// An ID unique to this process among the live replicas of `service`: the pod name (`HOSTNAME`,
/// else `service`), the pid and a random part, so two processes on one host differ too. It names
/// the ingester's lease owner and a recomputer's claims in Redis.
pub fn instance_id(service: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| service.to_owned());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received");
}

/// Runs a service until `shutdown` resolves: serves `router` on `listener` and runs the loops
/// `background` returns beside it, handing them a token that is cancelled on shutdown (or
/// when the server fails). In-flight requests then get at most `grace`; the loops are awaited
/// in full, since what they do on stopping (releasing a lease, handing back claims) is bounded
/// by the Redis timeout. A service without loops passes `|_| async {}`.
pub async fn run<F>(
    listener: TcpListener,
    router: Router,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
    background: impl FnOnce(CancellationToken) -> F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let stop = CancellationToken::new();
    let loops = tokio::spawn(background(stop.clone()));
    let signal = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown => signal.cancel(),
            () = signal.cancelled() => {}
        }
    });
    let served = serve(listener, router, stop.clone(), grace).await;
    stop.cancel();
    if let Err(e) = loops.await
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
    served
}

/// Serves `router` on `listener` (HTTP/1.1, and HTTP/2 with prior knowledge, as gRPC clients
/// speak it) until `stop` is cancelled, then waits at most `grace` for in-flight requests
/// before returning. [`run`] serves its main listener so; a second port (OTLP/gRPC) is served
/// with this from the background task.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    // Answers are small and written whole: send them at once rather than wait for an ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server =
        axum::serve(listener, router).with_graceful_shutdown(stop.clone().cancelled_owned());
    let server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = server => result,
        () = async {
            stop.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "in-flight requests did not finish within the grace period");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Shutdown reaches the loops, and `run` returns only once they have finished stopping.
    #[tokio::test]
    async fn shutdown_stops_the_server_and_waits_for_the_loops() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let released = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&released);
        let service = tokio::spawn(run(
            listener,
            Router::new(),
            Duration::from_secs(5),
            async {
                let _ = stopped.await;
            },
            |token| async move {
                token.cancelled().await;
                // Stopping takes a while (a lease or claims handed back over Redis).
                tokio::task::yield_now().await;
                done.store(true, Ordering::Relaxed);
            },
        ));
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), service)
            .await
            .expect("stops on shutdown")
            .unwrap()
            .unwrap();
        assert!(released.load(Ordering::Relaxed));
    }

    #[test]
    fn instance_ids_differ_within_a_process() {
        let (a, b) = (instance_id("svc"), instance_id("svc"));
        assert_ne!(a, b);
        let pid = std::process::id().to_string();
        assert!(a.contains(&pid), "{a}");
    }
}
