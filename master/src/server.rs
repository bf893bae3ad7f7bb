//! Serves gRPC and HTTP on one listener: requests whose `content-type` is
//! `application/grpc*` go to the gRPC services, all others to the HTTP
//! routes. HTTP/1.1 and HTTP/2 are both accepted.

use std::convert::Infallible;
use std::time::Duration;

use http::header::CONTENT_TYPE;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::service::Routes;
use tower::ServiceExt;

/// How much a peer may send on one HTTP/2 stream before the master has read
/// it. Each agent's session is one stream; with hyper's default (1 MiB) a
/// burst of status updates from 1,000 agents waits in the master's buffers,
/// with 64 KiB it waits in the agents (peak RSS in `agora bench launch`:
/// 263-281 MB before, 246-250 MB after, at the same rate).
const STREAM_WINDOW: u32 = 64 * 1024;
/// The same for all streams of one connection together (several requests
/// of one HTTP/2 client share it).
const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// How long open connections get to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(5);

fn is_grpc(req: &http::Request<Incoming>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Accepts connections until `shutdown`, then drains them (bounded).
pub(crate) async fn serve<H>(
    listener: TcpListener,
    grpc: Routes,
    http_routes: H,
    shutdown: CancellationToken,
) where
    H: warp::Filter<Extract = (warp::reply::Response,), Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let http = warp::service(http_routes);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(10)))
        .keep_alive_timeout(Duration::from_secs(20))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off a little.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let grpc = grpc.clone();
        let http = http.clone();
        let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let grpc = grpc.clone();
            let http = http.clone();
            async move {
                if is_grpc(&req) {
                    grpc.oneshot(req).await.map(|r| r.map(Body::new))
                } else {
                    http.oneshot(req).await.map(|r| r.map(Body::new))
                }
            }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain period; closing them");
    }
}
