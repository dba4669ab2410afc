//! Typed blocks: one described `bytemuck::Pod` value per message ([`crate::describe!`]). The
//! type's layout fingerprint is the block's schema ([`Schema::of`]), so a consumer of a type
//! with another layout is refused at attach.

use std::marker::PhantomData;
use std::time::Duration;

use crate::config::{Config, Expectations, Schema};
use crate::schema::Described;
use crate::{Consumer, Error, Producer};

/// A producer of `T` values.
#[derive(Debug)]
pub struct TypedProducer<T: Described> {
    inner: Producer,
    _t: PhantomData<T>,
}

impl<T: Described> TypedProducer<T> {
    /// Creates a block whose slots hold one `T` and whose schema is `Schema::of::<T>(version)`.
    /// `config`'s slot size and schema are replaced.
    ///
    /// # Errors
    /// As [`Producer::create`]; [`Error::InvalidConfig`] if `T` is zero-sized, aligned to more
    /// than 64 bytes, or its description does not match it.
    pub fn create(name: &str, config: Config, version: u32) -> Result<Self, Error> {
        check_type::<T>()?;
        let size = std::mem::size_of::<T>() as u32;
        let inner = Producer::create(
            name,
            config.slot_size(size).schema(schema_of::<T>(version)?),
        )?;
        Ok(TypedProducer {
            inner,
            _t: PhantomData,
        })
    }

    /// Writes `value` as the next message.
    pub fn send(&mut self, value: &T, timeout: Duration) -> Result<u64, Error> {
        self.inner.send(bytemuck::bytes_of(value), timeout)
    }

    /// Fills the next message in place: `f` gets the slot as a `&mut T` (zeroed first).
    pub fn with_write(&mut self, timeout: Duration, f: impl FnOnce(&mut T)) -> Result<u64, Error> {
        let size = std::mem::size_of::<T>();
        let mut g = self.inner.write(timeout)?;
        let bytes = &mut g[..size];
        bytes.fill(0);
        f(bytemuck::from_bytes_mut(bytes));
        g.commit(size)
    }

    /// The untyped producer.
    pub fn inner(&mut self) -> &mut Producer {
        &mut self.inner
    }
}

/// A consumer of `T` values.
#[derive(Debug)]
pub struct TypedConsumer<T: Described> {
    inner: Consumer,
    _t: PhantomData<T>,
}

impl<T: Described> TypedConsumer<T> {
    /// Attaches, requiring the schema `Schema::of::<T>(version)` (waits up to `timeout` for the
    /// block to appear).
    ///
    /// # Errors
    /// As [`Consumer::attach_wait`]; [`Error::SchemaMismatch`] for a block whose type has another
    /// layout (or version); [`Error::InvalidConfig`] as for [`TypedProducer::create`].
    pub fn attach(
        name: &str,
        exp: Expectations,
        version: u32,
        timeout: Duration,
    ) -> Result<Self, Error> {
        check_type::<T>()?;
        let inner = Consumer::attach_wait(name, exp.schema(schema_of::<T>(version)?), timeout)?;
        Ok(TypedConsumer {
            inner,
            _t: PhantomData,
        })
    }

    /// Reads the next value (copied out) and its sequence number.
    pub fn recv(&mut self, timeout: Duration) -> Result<(u64, T), Error> {
        self.inner.with_read(timeout, |g| {
            let size = std::mem::size_of::<T>();
            if g.len() < size {
                return Err(Error::PayloadTooLarge {
                    len: size,
                    slot_size: g.len(),
                });
            }
            Ok((g.seq(), bytemuck::pod_read_unaligned(&g[..size])))
        })?
    }

    /// Reads the next value in place: `f` gets a `&T` inside the slot.
    pub fn with_read<R>(
        &mut self,
        timeout: Duration,
        f: impl FnOnce(u64, &T) -> R,
    ) -> Result<R, Error> {
        let size = std::mem::size_of::<T>();
        self.inner.with_read(timeout, |g| {
            if g.len() < size {
                return Err(Error::PayloadTooLarge {
                    len: size,
                    slot_size: g.len(),
                });
            }
            Ok(f(g.seq(), bytemuck::from_bytes(&g[..size])))
        })?
    }

    /// The untyped consumer.
    pub fn inner(&mut self) -> &mut Consumer {
        &mut self.inner
    }
}

/// [`Schema::of`], a wrong description being [`Error::InvalidConfig`].
fn schema_of<T: Described>(version: u32) -> Result<Schema, Error> {
    Schema::of::<T>(version).map_err(|e| Error::InvalidConfig {
        what: format!("the description of {}: {e}", std::any::type_name::<T>()),
    })
}

fn check_type<T>() -> Result<(), Error> {
    if std::mem::size_of::<T>() == 0 || std::mem::align_of::<T>() > 64 {
        return Err(Error::InvalidConfig {
            what: format!(
                "type {} must be sized and aligned to at most 64",
                std::any::type_name::<T>()
            ),
        });
    }
    Ok(())
}
