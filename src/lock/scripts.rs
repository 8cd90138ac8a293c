//! The lock's Lua scripts, and how they are sent.
//!
//! Every step that reads and then writes runs as one script, so that no
//! other client's command comes in between: a lock is only released or
//! extended by the holder of its token, and a release cannot miss a waiter
//! that marked itself after the read.
//!
//! Scripts go as `EVALSHA` (the hash only), and once as `EVAL` (the whole
//! source) on a server that does not have them cached yet (`NOSCRIPT`:
//! first use, a restart, a failover, `SCRIPT FLUSH`). They use `TIME`, so
//! they need Redis 5 or later (scripts replicated by their effects).

use std::future::Future;
use std::sync::OnceLock;

use redis::{Cmd, RedisResult, Value};

use super::Backend;

/// `KEYS`: lock, marker, [fence]. `ARGV`: token, lease ms, [fence
/// retention ms].
///
/// Takes the lock if it is free (or already ours: a resent command whose
/// first answer was lost) and answers `{1, fencing token}`. The fencing
/// token is the server's clock in microseconds, or the last token given
/// under this name plus one if that is larger (so tokens grow even if the
/// clock steps back, for as long as the fence key is kept). If the lock is
/// held, marks that someone waits (the marker lives as long as the lock),
/// so that the release publishes, and answers `{0, remaining ms}`.
const ACQUIRE: &str = r"
local taken = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
if not taken and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then
    redis.call('SET', KEYS[2], '1', 'PX', left)
  end
  return {0, left}
end
local now = redis.call('TIME')
local fence = tonumber(now[1]) * 1000000 + tonumber(now[2])
if KEYS[3] then
  local last = tonumber(redis.call('GET', KEYS[3]))
  if last and last >= fence then
    fence = last + 1
  end
  redis.call('SET', KEYS[3], string.format('%.0f', fence), 'PX', ARGV[3])
end
return {1, fence}
";

/// `KEYS`: lock, marker. `ARGV`: token.
///
/// Deletes the lock if the token is the caller's and, if someone marked
/// that they wait, publishes on the lock's channel (the lock key's own
/// name). Answers 1 if it released, 0 if the lock was not the caller's
/// (expired, or taken by someone else since).
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if redis.call('DEL', KEYS[2]) == 1 then
    redis.call('PUBLISH', KEYS[1], '')
  end
  return 1
end
return 0
";

/// `KEYS`: lock, marker. `ARGV`: token, lease ms.
///
/// Sets the lock's lease to `lease` from now if the token is the
/// caller's (the waiters' marker with it); answers 1, else 0.
const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
";

/// `KEYS`: lock, marker, window. `ARGV`: token, lease ms, interval ms.
///
/// Refresh-ahead's claim: time is cut into windows of `interval` on the
/// server's clock, and the first caller of a window whose lock is free
/// takes the lock and the window. Answers `{1, fencing token}` to it,
/// `{0, 0}` when the window is already taken (another process refreshed),
/// `{0, 1}` when the lock is held (a load or a refresh under way).
const CLAIM_WINDOW: &str = r"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local interval = tonumber(ARGV[3])
local window = math.floor(ms / interval)
local last = tonumber(redis.call('GET', KEYS[3]))
if last and last >= window then
  return {0, 0}
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0, 1}
end
redis.call('SET', KEYS[3], string.format('%.0f', window), 'PX', 2 * interval)
return {1, tonumber(now[1]) * 1000000 + tonumber(now[2])}
";

/// A script: its source, and its SHA-1 (computed on first use).
pub(crate) struct Script {
    source: &'static str,
    sha: OnceLock<String>,
}

impl Script {
    pub(crate) const fn new(source: &'static str) -> Self {
        Script {
            source,
            sha: OnceLock::new(),
        }
    }

    /// The SHA-1 Redis knows the script by.
    fn sha(&self) -> &str {
        self.sha
            .get_or_init(|| redis::Script::new(self.source).get_hash().to_owned())
    }
}

pub(crate) static ACQUIRE_SCRIPT: Script = Script::new(ACQUIRE);
pub(crate) static RELEASE_SCRIPT: Script = Script::new(RELEASE);
pub(crate) static EXTEND_SCRIPT: Script = Script::new(EXTEND);
pub(crate) static CLAIM_WINDOW_SCRIPT: Script = Script::new(CLAIM_WINDOW);

/// One argument of a script call.
pub(crate) enum Arg<'a> {
    Str(&'a str),
    Int(u64),
}

/// Runs `script` with `keys` and `args`: `EVALSHA`, then `EVAL` if the
/// server does not know the script. An error reply becomes an `Err`.
pub(crate) async fn run(
    backend: &dyn Backend,
    script: &Script,
    keys: &[&str],
    args: &[Arg<'_>],
) -> RedisResult<Value> {
    run_with(
        |cmd| async move { backend.query(&cmd).await },
        script,
        keys,
        args,
    )
    .await
}

/// [`run`] over any connection: `query` sends one command.
pub(crate) async fn run_with<Q, Fut>(
    query: Q,
    script: &Script,
    keys: &[&str],
    args: &[Arg<'_>],
) -> RedisResult<Value>
where
    Q: Fn(Cmd) -> Fut,
    Fut: Future<Output = RedisResult<Value>>,
{
    let command = |verb: &str, body: &str| {
        let mut cmd = Cmd::new();
        cmd.arg(verb).arg(body).arg(keys.len()).arg(keys);
        for arg in args {
            match arg {
                Arg::Str(text) => cmd.arg(*text),
                Arg::Int(n) => cmd.arg(*n),
            };
        }
        cmd
    };
    let sha = command("EVALSHA", script.sha());
    match query(sha).await.and_then(Value::extract_error) {
        Err(e) if e.code() == Some("NOSCRIPT") => {
            let eval = command("EVAL", script.source);
            query(eval).await.and_then(Value::extract_error)
        }
        other => other,
    }
}

/// A script's `{flag, number}` answer.
pub(crate) fn pair(reply: &Value) -> Option<(i64, i64)> {
    match reply {
        Value::Array(items) => match items.as_slice() {
            [Value::Int(flag), Value::Int(n)] => Some((*flag, *n)),
            _ => None,
        },
        _ => None,
    }
}

/// A script's 0-or-1 answer.
pub(crate) fn flag(reply: &Value) -> Option<bool> {
    match reply {
        Value::Int(n) => Some(*n == 1),
        _ => None,
    }
}
