//! The service as a child process on a free loopback port, for the load
//! generator and the tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

/// The line the service prints on stdout once it accepts connections,
/// followed by its address.
pub const LISTENING: &str = "listening on http://";

/// A running `service` process, killed when dropped.
pub struct ServiceProcess {
    child: Child,
    addr: SocketAddr,
    // Kept open so that the service never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl ServiceProcess {
    /// Starts the `service` binary at `binary` with `args` (plus
    /// `--addr 127.0.0.1:0`) and waits until it listens.
    pub fn start(binary: &Path, args: &[String]) -> Result<ServiceProcess, String> {
        let mut child = Command::new(binary)
            .args(args)
            .args(["--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        loop {
            line.clear();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let status = child.wait().map_err(|e| e.to_string())?;
                    return Err(format!(
                        "{} {args:?} exited ({status}) before listening",
                        binary.display()
                    ));
                }
                Ok(_) => {}
            }
            if let Some(addr) = line.trim().strip_prefix(LISTENING) {
                let addr = addr
                    .trim_end_matches('/')
                    .parse()
                    .map_err(|e| format!("bad address in {line:?}: {e}"))?;
                return Ok(ServiceProcess {
                    child,
                    addr,
                    _stdout: stdout,
                });
            }
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
