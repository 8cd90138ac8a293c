//! A small HTTP/1.1 client on one keep-alive connection (hyper), for the
//! load generator and the tests.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// What a failed request returns.
pub type ClientError = Box<dyn std::error::Error + Send + Sync>;

/// An answer: its status and its whole body.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body, read to the end.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One connection to a server, sending one request at a time.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    connection: JoinHandle<()>,
}

impl Client {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        let connection = tokio::spawn(async move {
            // The connection ends when the client is dropped or the server
            // closes it; the next request then reports the error.
            let _ = connection.await;
        });
        Ok(Client {
            sender,
            host: addr.to_string(),
            connection,
        })
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Result<Answer, ClientError> {
        self.send(Method::GET, path, None).await
    }

    /// `PUT path` with `body` as JSON.
    pub async fn put_json(
        &mut self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Answer, ClientError> {
        let body = Bytes::from(serde_json::to_vec(body)?);
        self.send(Method::PUT, path, Some(body)).await
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Answer, ClientError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host);
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body.unwrap_or_default()))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer { status, body })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.connection.abort();
    }
}
