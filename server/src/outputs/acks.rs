//! Whether a TCP destination still takes what is sent: the kernel's count
//! of bytes the peer acknowledged (`TCP_INFO`), watched over time. A
//! destination that stops reading shows here at once, long before the
//! socket's send buffer (megabytes, autotuned) fills and writes block.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Watches one connection; lives no longer than its socket.
pub struct AckWatch {
    fd: RawFd,
    acked: u64,
    since: Instant,
    /// Something was sent since the last acknowledgement.
    waiting: bool,
}

impl AckWatch {
    pub fn new(tcp: &tokio::net::TcpStream) -> Self {
        let fd = tcp.as_raw_fd();
        Self {
            fd,
            acked: bytes_acked(fd).unwrap_or(0),
            since: Instant::now(),
            waiting: false,
        }
    }

    /// Something was sent (an acknowledgement is now due).
    pub fn sent(&mut self) {
        if !self.waiting {
            self.waiting = true;
            self.since = Instant::now();
        }
    }

    /// How long what was sent has waited for the peer to acknowledge
    /// anything new (zero when nothing waits, or where the kernel does not
    /// say).
    pub fn silent_for(&mut self) -> Duration {
        match bytes_acked(self.fd) {
            Some(acked) if acked != self.acked => {
                self.acked = acked;
                self.waiting = false;
                Duration::ZERO
            }
            Some(_) if self.waiting => self.since.elapsed(),
            _ => Duration::ZERO,
        }
    }
}

#[cfg(target_os = "linux")]
fn bytes_acked(fd: RawFd) -> Option<u64> {
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable tcp_info of `len` bytes; the kernel
    // writes at most `len` bytes and says how many. `fd` is an open TCP
    // socket (the watch lives inside its connection's scope); a closed or
    // reused descriptor only makes the call fail or read another socket's
    // figures, never touch memory.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    // Kernels before 4.1 do not fill tcpi_bytes_acked.
    let filled = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + 8;
    (rc == 0 && len as usize >= filled).then_some(info.tcpi_bytes_acked)
}

#[cfg(not(target_os = "linux"))]
fn bytes_acked(_fd: RawFd) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_peer_that_stops_reading_goes_silent() {
        // A peer with a small fixed receive buffer (no autotuning).
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (_peer, _) = listener.accept().await.unwrap();
        let mut watch = AckWatch::new(&tcp);
        // The peer reads nothing: its window fills (a write blocks), then
        // nothing more is acknowledged.
        let chunk = vec![7u8; 64 * 1024];
        let mut blocked = false;
        for _ in 0..200 {
            let write = tcp.write_all(&chunk);
            blocked = tokio::time::timeout(Duration::from_millis(100), write)
                .await
                .is_err();
            watch.sent();
            if blocked {
                break;
            }
        }
        assert!(blocked, "the peer's window never filled");
        assert_eq!(
            watch.silent_for(),
            Duration::ZERO,
            "it acknowledged at first"
        );
        watch.sent();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(watch.silent_for() >= Duration::from_millis(300));
    }
}
