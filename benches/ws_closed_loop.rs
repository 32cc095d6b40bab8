//! A closed-loop WebSocket reference client for `benches/websocket.sh`: N connections, each
//! sending one message and waiting for its answer before the next, for D seconds; prints the
//! messages per second answered and the client's CPU per message. Written apart from the
//! generator (no schedule, no recorder), to set its ceiling beside a plain client's.
//!
//!   ws_closed_loop ws://127.0.0.1:8081/ws/echo 8 5

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (Some(url), conns, secs) = (
        args.first().cloned(),
        args.get(1).and_then(|v| v.parse().ok()).unwrap_or(8usize),
        args.get(2).and_then(|v| v.parse().ok()).unwrap_or(5u64),
    ) else {
        eprintln!("usage: ws_closed_loop ws://HOST:PORT/PATH [CONNECTIONS] [SECONDS]");
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (count, took, cpu) = rt.block_on(async move {
        let mut sockets = Vec::new();
        for _ in 0..conns {
            match tokio_tungstenite::client_async(
                url.as_str(),
                tokio::net::TcpStream::connect(host(&url)).await.unwrap(),
            )
            .await
            {
                Ok((ws, _)) => sockets.push(ws),
                Err(e) => panic!("{url}: {e}"),
            }
        }
        let end = Instant::now() + Duration::from_secs(secs);
        let (start, cpu0) = (Instant::now(), cpu_seconds());
        let msg = r#"{"id":1,"event":"price","symbol":"GWB","bid":101.25,"ask":101.5}"#;
        let loops = sockets.into_iter().map(|mut ws| async move {
            let mut n = 0u64;
            while Instant::now() < end {
                if ws.send(Message::text(msg)).await.is_err() {
                    break;
                }
                match ws.next().await {
                    Some(Ok(_)) => n += 1,
                    _ => break,
                }
            }
            n
        });
        let counts = futures_util::future::join_all(loops).await;
        (
            counts.iter().sum::<u64>(),
            start.elapsed(),
            cpu_seconds() - cpu0,
        )
    });
    println!(
        "  closed-loop reference ({conns} connections, one message in flight each): {:.0} messages/s, {:.2} us CPU per message",
        count as f64 / took.as_secs_f64(),
        cpu * 1e6 / count.max(1) as f64
    );
}

fn host(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_string()
}
