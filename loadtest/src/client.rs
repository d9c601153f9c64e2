//! The API key every call carries.

use tonic::service::Interceptor;
use tonic::transport::Channel;

#[derive(Clone)]
pub(crate) struct Key(pub(crate) String);

impl Interceptor for Key {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let v = format!("Bearer {}", self.0)
            .parse()
            .map_err(|_| tonic::Status::invalid_argument("API key is not valid ASCII"))?;
        req.metadata_mut().insert("authorization", v);
        Ok(req)
    }
}

pub(crate) type Svc = tonic::service::interceptor::InterceptedService<Channel, Key>;
