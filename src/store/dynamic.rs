//! A store from outside the crate behind one pointer: [`Custom`] wraps any [`Store`] as a
//! trait object, with a boxed future per call (the built-in stores are dispatched
//! statically, in [`Backend`](super::Backend)).

use std::time::Duration;

use futures::future::BoxFuture;

use super::{Acquire, AttemptId, Fence, Fenced, Inspected, Store, Watch};
use crate::Result;

/// [`Store`] made object-safe: the same methods, with boxed futures.
trait DynStore: Send + Sync + 'static {
    fn granularity(&self) -> Duration;
    fn grant(&self, expiration: Duration) -> Result<Duration>;
    fn acquire<'a>(
        &'a self,
        key: &'a str,
        val: &'a str,
        expiration: Duration,
        attempt: AttemptId,
        label: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Acquire>>;
    fn refresh<'a>(
        &'a self,
        key: &'a str,
        val: &'a str,
        expiration: Duration,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<bool>>;
    fn release<'a>(
        &'a self,
        key: &'a str,
        val: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<bool>>;
    fn abort<'a>(
        &'a self,
        key: &'a str,
        val: &'a str,
        attempts: &'a [AttemptId],
        undo: bool,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<bool>>;
    fn ttl<'a>(
        &'a self,
        key: &'a str,
        val: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<Duration>>>;
    fn force_release<'a>(
        &'a self,
        key: &'a str,
        only: Option<u64>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<bool>>;
    fn inspect<'a>(
        &'a self,
        key: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<Inspected>>>;
    fn list<'a>(
        &'a self,
        prefix: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<Inspected>>>;
    fn fenced<'a>(
        &'a self,
        access: &'a Fence<'a>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Fenced>>;
    fn watch(&self, key: &str) -> Option<Watch>;
}

impl<S: Store> DynStore for S {
    fn granularity(&self) -> Duration {
        Store::granularity(self)
    }
    fn grant(&self, expiration: Duration) -> Result<Duration> {
        Store::grant(self, expiration)
    }
    fn acquire<'a>(
        &'a self,
        key: &'a str,
        val: &'a str,
        expiration: Duration,
        attempt: AttemptId,
        label: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Acquire>> {
        Box::pin(Store::acquire(
            self, key, val, expiration, attempt, label, timeout,
        ))
    }
    fn refresh<'a>(
        &'a self,
        key: &'a str,
        val: &'a str,
        expiration: Duration,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(Store::refresh(self, key, val, expiration, timeout))
    }
    fn release<'a>(
        &'a self,
        key: &'a str,
        val: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(Store::release(self, key, val, timeout))
    }
    fn abort<'a>(
        &'a self,
        key: &'a str,
        val: &'a str,
        attempts: &'a [AttemptId],
        undo: bool,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(Store::abort(self, key, val, attempts, undo, timeout))
    }
    fn ttl<'a>(
        &'a self,
        key: &'a str,
        val: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<Duration>>> {
        Box::pin(Store::ttl(self, key, val, timeout))
    }
    fn force_release<'a>(
        &'a self,
        key: &'a str,
        only: Option<u64>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(Store::force_release(self, key, only, timeout))
    }
    fn inspect<'a>(
        &'a self,
        key: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Option<Inspected>>> {
        Box::pin(Store::inspect(self, key, timeout))
    }
    fn list<'a>(
        &'a self,
        prefix: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<Inspected>>> {
        Box::pin(Store::list(self, prefix, timeout))
    }
    fn fenced<'a>(
        &'a self,
        access: &'a Fence<'a>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Fenced>> {
        Box::pin(Store::fenced(self, access, timeout))
    }
    fn watch(&self, key: &str) -> Option<Watch> {
        Store::watch(self, key)
    }
}

/// A store from outside the crate ([`Client::from_store`](crate::Client::from_store)).
pub(crate) struct Custom(Box<dyn DynStore>);

impl Custom {
    pub(crate) fn new(store: impl Store) -> Self {
        Custom(Box::new(store))
    }
}

impl Store for Custom {
    fn granularity(&self) -> Duration {
        DynStore::granularity(&*self.0)
    }
    fn grant(&self, expiration: Duration) -> Result<Duration> {
        DynStore::grant(&*self.0, expiration)
    }
    async fn acquire(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        attempt: AttemptId,
        label: &str,
        timeout: Duration,
    ) -> Result<Acquire> {
        DynStore::acquire(&*self.0, key, val, expiration, attempt, label, timeout).await
    }
    async fn refresh(
        &self,
        key: &str,
        val: &str,
        expiration: Duration,
        timeout: Duration,
    ) -> Result<bool> {
        DynStore::refresh(&*self.0, key, val, expiration, timeout).await
    }
    async fn release(&self, key: &str, val: &str, timeout: Duration) -> Result<bool> {
        DynStore::release(&*self.0, key, val, timeout).await
    }
    async fn abort(
        &self,
        key: &str,
        val: &str,
        attempts: &[AttemptId],
        undo: bool,
        timeout: Duration,
    ) -> Result<bool> {
        DynStore::abort(&*self.0, key, val, attempts, undo, timeout).await
    }
    async fn ttl(&self, key: &str, val: &str, timeout: Duration) -> Result<Option<Duration>> {
        DynStore::ttl(&*self.0, key, val, timeout).await
    }
    async fn force_release(&self, key: &str, only: Option<u64>, timeout: Duration) -> Result<bool> {
        DynStore::force_release(&*self.0, key, only, timeout).await
    }
    async fn inspect(&self, key: &str, timeout: Duration) -> Result<Option<Inspected>> {
        DynStore::inspect(&*self.0, key, timeout).await
    }
    async fn list(&self, prefix: &str, timeout: Duration) -> Result<Vec<Inspected>> {
        DynStore::list(&*self.0, prefix, timeout).await
    }
    async fn fenced(&self, access: &Fence<'_>, timeout: Duration) -> Result<Fenced> {
        DynStore::fenced(&*self.0, access, timeout).await
    }
    fn watch(&self, key: &str) -> Option<Watch> {
        DynStore::watch(&*self.0, key)
    }
}
