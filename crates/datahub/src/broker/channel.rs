//! Between blocks and the broker: [`ChannelInfo`] from a live [`Producer`]'s header, and a
//! discovered [`ChannelInfo`] checked against the block before and after attaching.
//!
//! The block header stays the authority: the broker only says where to look and what to
//! expect; `attach` still checks the header's layout and schema itself.

use crate::schema::{Fingerprint, SchemaLayout};
use crate::{BlockInfo, Consumer, Expectations, Inspector, Producer, Schema};

use super::BrokerError;
use super::wire::{ChannelInfo, FormatVersion, SchemaFields, SchemaInfo};

fn parse_version(v: &str) -> FormatVersion {
    let mut it = v.split('.').map(|p| p.parse::<u16>().unwrap_or(0));
    FormatVersion {
        major: it.next().unwrap_or(0),
        minor: it.next().unwrap_or(0),
    }
}

fn fingerprint_of(info: &BlockInfo) -> Result<Fingerprint, BrokerError> {
    format!("{}{}", crate::schema::FINGERPRINT_PREFIX, info.schema_hash)
        .parse()
        .map_err(|e: String| BrokerError::InvalidArgument(format!("block schema hash: {e}")))
}

impl ChannelInfo {
    /// The registration of `producer`'s block as channel `channel_name`, read from its header.
    /// A secure producer ([`Producer::create_secure`]) is registered with its socket path as
    /// `attach_socket` and an empty `block_name`. `schema_id` names the schema for people; `fields`,
    /// when given, is sent so tools can decode slots, and must hash to the block's schema.
    /// `role_uid` is left empty: [`super::Client::register`] fills it in.
    ///
    /// # Errors
    /// [`BrokerError::Block`] when the block cannot be opened; [`BrokerError::InvalidArgument`]
    /// when `fields` does not hash to the block's schema, or the block's producer is not this
    /// process.
    pub fn from_producer(
        channel_name: &str,
        producer: &Producer,
        schema_id: &str,
        fields: Option<&SchemaLayout>,
    ) -> Result<ChannelInfo, BrokerError> {
        let info = producer.info();
        let attach_socket = match producer.attach_socket() {
            None => None,
            Some(p) => {
                let abs = std::path::absolute(p).map_err(|e| {
                    BrokerError::InvalidArgument(format!("attach socket {}: {e}", p.display()))
                })?;
                let s = abs.to_str().ok_or_else(|| {
                    BrokerError::InvalidArgument(format!(
                        "attach socket {} is not UTF-8",
                        abs.display()
                    ))
                })?;
                super::wire::check_attach_socket(s).map_err(BrokerError::InvalidArgument)?;
                Some(s.to_owned())
            }
        };
        let (pid, start_time) = crate::proc::me();
        if info.producer.pid != pid {
            return Err(BrokerError::InvalidArgument(format!(
                "block {:?} belongs to pid {}, not to this process ({pid})",
                producer.name(),
                info.producer.pid
            )));
        }
        let fp = fingerprint_of(&info)?;
        if let Some(l) = fields {
            let got = l
                .fingerprint()
                .map_err(|e| BrokerError::InvalidArgument(format!("schema fields: {e}")))?;
            if got != fp {
                return Err(BrokerError::InvalidArgument(format!(
                    "the schema fields hash to {got}, the block's schema is {fp}"
                )));
            }
        }
        Ok(ChannelInfo {
            channel_name: channel_name.to_owned(),
            role_uid: String::new(),
            block_name: if attach_socket.is_some() {
                String::new()
            } else {
                info.name.clone()
            },
            attach_socket,
            policy: info.policy,
            slot_size: info.slot_size,
            slot_count: info.slot_count,
            flex_zone_size: info.flex_zone_size,
            max_consumers: info.max_consumers,
            checksum: info.checksum,
            keyed: info.keyed,
            format_version: parse_version(&info.version),
            layout_hash: info.layout_hash.clone(),
            schema: SchemaInfo {
                id: schema_id.to_owned(),
                version: info.schema_version,
                fingerprint: fp.to_string(),
                fields: fields.map(SchemaFields::of),
            },
            producer_pid: pid,
            producer_start_time: start_time,
        })
    }

    /// The schema the broker announced (hash and version), for [`Expectations::schema`].
    ///
    /// # Errors
    /// [`BrokerError::BadReply`] when the fingerprint does not parse.
    pub fn schema(&self) -> Result<Schema, BrokerError> {
        let fp: Fingerprint = self
            .schema
            .fingerprint
            .parse()
            .map_err(|e: String| BrokerError::BadReply(format!("schema.fingerprint: {e}")))?;
        Ok(Schema {
            hash: fp.0,
            version: self.schema.version,
        })
    }

    /// Checks a block's header against this announcement: every field the broker carries
    /// (name, policy, sizes, checksum, keyed, format version, layout hash, schema, producer
    /// pid).
    ///
    /// # Errors
    /// [`BrokerError::BlockMismatch`] naming the first field that differs.
    pub fn check_block(&self, b: &BlockInfo) -> Result<(), BrokerError> {
        let fp = fingerprint_of(b)?.to_string();
        // A memfd block's name is a label (`memfd:` and the socket path), not announced.
        let name = if self.attach_socket.is_some() {
            String::new()
        } else {
            b.name.clone()
        };
        let checks: [(&'static str, String, String); 12] = [
            ("block_name", self.block_name.clone(), name),
            (
                "policy",
                format!("{:?}", self.policy),
                format!("{:?}", b.policy),
            ),
            (
                "slot_size",
                self.slot_size.to_string(),
                b.slot_size.to_string(),
            ),
            (
                "slot_count",
                self.slot_count.to_string(),
                b.slot_count.to_string(),
            ),
            (
                "flex_zone_size",
                self.flex_zone_size.to_string(),
                b.flex_zone_size.to_string(),
            ),
            (
                "max_consumers",
                self.max_consumers.to_string(),
                b.max_consumers.to_string(),
            ),
            (
                "checksum",
                format!("{:?}", self.checksum),
                format!("{:?}", b.checksum),
            ),
            ("keyed", self.keyed.to_string(), b.keyed.to_string()),
            (
                "format_version",
                format!(
                    "{}.{}",
                    self.format_version.major, self.format_version.minor
                ),
                b.version.clone(),
            ),
            (
                "layout_hash",
                self.layout_hash.clone(),
                b.layout_hash.clone(),
            ),
            (
                "schema",
                format!("{} v{}", self.schema.fingerprint, self.schema.version),
                format!("{fp} v{}", b.schema_version),
            ),
            (
                "producer_pid",
                self.producer_pid.to_string(),
                b.producer.pid.to_string(),
            ),
        ];
        for (field, broker, block) in checks {
            if broker != block {
                return Err(BrokerError::BlockMismatch {
                    field,
                    broker,
                    block,
                });
            }
        }
        Ok(())
    }

    /// Attaches a consumer to the announced block: checks the header against this
    /// announcement ([`ChannelInfo::check_block`]), attaches with `exp` plus the announced
    /// policy, schema and slot size, then checks again (the block may have been replaced in
    /// between).
    ///
    /// A secure channel (`attach_socket`) is attached with [`Consumer::attach_secure`] and
    /// `exp`'s checksum key ([`Expectations::checksum_key`]) as the block key; its header is
    /// checked against the announcement once attached.
    ///
    /// # Errors
    /// [`BrokerError::Block`] from opening or attaching (the header's own checks; for a
    /// secure channel also the handshake's errors), [`BrokerError::BlockMismatch`];
    /// [`BrokerError::InvalidArgument`] for a secure channel when `exp` has no key.
    pub fn attach(&self, exp: Expectations) -> Result<Consumer, BrokerError> {
        if let Some(sock) = &self.attach_socket {
            let key = exp.key.ok_or_else(|| {
                BrokerError::InvalidArgument(format!(
                    "channel {:?} is secure (socket {sock}): its block key is needed (Expectations::checksum_key)",
                    self.channel_name
                ))
            })?;
            let exp = exp
                .policy(self.policy)
                .schema(self.schema()?)
                .min_slot_size(self.slot_size);
            let c = Consumer::attach_secure(sock, &key, exp).map_err(BrokerError::Block)?;
            self.check_block(&c.info())?;
            return Ok(c);
        }
        let check = || -> Result<(), BrokerError> {
            let i = Inspector::open(&self.block_name).map_err(BrokerError::Block)?;
            self.check_block(&i.info())
        };
        check()?;
        let exp = exp
            .policy(self.policy)
            .schema(self.schema()?)
            .min_slot_size(self.slot_size);
        let c = Consumer::attach(&self.block_name, exp).map_err(BrokerError::Block)?;
        check()?;
        Ok(c)
    }
}

impl Producer {
    /// Registers this producer's block with a broker as channel `channel`:
    /// [`ChannelInfo::from_producer`] then [`super::Client::register`]. The client's thread
    /// then heartbeats the channel while `client` lives; [`super::Client::deregister`] (or
    /// dropping the client, after the broker's dead window) removes it.
    ///
    /// # Errors
    /// As [`ChannelInfo::from_producer`]; [`BrokerError::Refused`] (`CHANNEL_EXISTS`,
    /// `SCHEMA_MISMATCH`, ...) or [`BrokerError::Timeout`] after `timeout` from the broker.
    pub fn register(
        &self,
        client: &super::Client,
        channel: &str,
        schema_id: &str,
        fields: Option<&SchemaLayout>,
        timeout: std::time::Duration,
    ) -> Result<ChannelInfo, BrokerError> {
        let info = ChannelInfo::from_producer(channel, self, schema_id, fields)?;
        client.register(&info, timeout)?;
        Ok(info)
    }
}

impl Producer {
    /// [`Producer::handover`] to `successor_name`, then tells the broker
    /// ([`super::Client::handover`]) that channel `channel` is on the successor now, with its
    /// registration read from the new header ([`ChannelInfo::from_producer`]; `schema_id` and
    /// `fields` as for [`Producer::register`]). Consumers registered with the channel get
    /// `HANDOVER_NOTIFY`; later discoveries name the successor.
    ///
    /// # Errors
    /// [`BrokerError::Block`] from the handover (nothing changed then); after a successful
    /// handover, the errors of [`ChannelInfo::from_producer`] and [`super::Client::handover`]
    /// (the stream has moved; the broker still names the old block until a retry succeeds).
    #[allow(clippy::too_many_arguments)]
    pub fn handover_channel(
        &mut self,
        client: &super::Client,
        channel: &str,
        successor_name: &str,
        successor_config: crate::Config,
        schema_id: &str,
        fields: Option<&SchemaLayout>,
        timeout: std::time::Duration,
    ) -> Result<crate::Handover, BrokerError> {
        let h = self
            .handover(successor_name, successor_config)
            .map_err(BrokerError::Block)?;
        let info = ChannelInfo::from_producer(channel, self, schema_id, fields)?;
        client.handover(&info, &h, timeout)?;
        Ok(h)
    }
}

impl Consumer {
    /// Discovers channel `channel` at a broker, attaches to its block and registers as its
    /// consumer, all within `deadline`: [`super::Client::discover`] (retrying while the
    /// channel is pending or not registered yet), [`ChannelInfo::attach`] (the header checked
    /// against the announcement before and after attaching, plus `exp`), then
    /// [`super::Client::register_consumer`]. `schema`, when given, is cited at discovery: a
    /// channel with another fingerprint is refused (`SCHEMA_MISMATCH`). The client's thread
    /// heartbeats the registration while `client` lives.
    ///
    /// # Errors
    /// [`BrokerError::Timeout`] when the channel is not live by `deadline`;
    /// [`BrokerError::Refused`]; [`BrokerError::Block`] or [`BrokerError::BlockMismatch`]
    /// from attaching.
    pub fn discover(
        client: &super::Client,
        channel: &str,
        schema: Option<Fingerprint>,
        exp: Expectations,
        deadline: std::time::Duration,
    ) -> Result<(Consumer, ChannelInfo), BrokerError> {
        let end = std::time::Instant::now() + deadline;
        let left = || end.saturating_duration_since(std::time::Instant::now());
        let found = client.discover(channel, schema, left())?;
        let c = found.attach(exp)?;
        client.register_consumer(channel, schema, left())?;
        Ok((c, found))
    }
}
