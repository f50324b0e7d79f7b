//! A TCP relay in front of the apiserver that can make the connections it carries go dead,
//! as a broken network path or a vanished load balancer does: bytes stop flowing, yet
//! neither end sees the connection close.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The relay; dropping it closes every connection it carries.
pub struct DeadConnectionProxy {
    /// Where clients connect (`127.0.0.1:port`).
    pub addr: std::net::SocketAddr,
    /// Connections numbered below this relay nothing more.
    dead_below: Arc<AtomicU64>,
    /// Number of the next connection.
    next: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl DeadConnectionProxy {
    /// Relays every connection to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dead_below = Arc::new(AtomicU64::new(0));
        let next = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let dead_below = dead_below.clone();
            let next = next.clone();
            async move {
                // Owned here, so aborting the task ends every relay with it.
                let mut relays = JoinSet::new();
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        continue;
                    };
                    let number = next.fetch_add(1, Ordering::SeqCst);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    relays.spawn(relay(client_read, server_write, number, dead_below.clone()));
                    relays.spawn(relay(server_read, client_write, number, dead_below.clone()));
                }
            }
        });
        Self {
            addr,
            dead_below,
            next,
            task,
        }
    }

    /// Every connection open now stops carrying bytes (both ways) and stays open; later
    /// connections work.
    pub fn kill_open_connections(&self) {
        self.dead_below
            .store(self.next.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

impl Drop for DeadConnectionProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies one direction of connection `number` until either end closes or it goes dead.
async fn relay(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    number: u64,
    dead_below: Arc<AtomicU64>,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if number < dead_below.load(Ordering::SeqCst) {
            // Holds both halves open and forwards nothing, forever.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
