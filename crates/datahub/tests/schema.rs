//! Schema fingerprints from layouts (`datahub::schema`): a described struct and the same layout
//! written by hand agree, and typed blocks negotiate by layout, not by type name.

use std::time::Duration;

use datahub::schema::{Described, LayoutError, Scalar, SchemaLayout, ZoneLayout};
use datahub::{Config, Error, Expectations, Policy, Schema, TypedConsumer, TypedProducer};

const T: Duration = Duration::from_secs(5);

fn name(tag: &str) -> String {
    format!("schema-{tag}-{}", std::process::id())
}

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Imu {
    accel: [f32; 3],
    gyro: [f32; 3],
    stamp_ns: u64,
    seq: u32,
    flags: u16,
    kind: u8,
    spare: u8,
}
datahub::describe!(Imu {
    accel: [f32; 3],
    gyro: [f32; 3],
    stamp_ns: u64,
    seq: u32,
    flags: u16,
    kind: u8,
    spare: u8
});

/// Another program's name for the same bytes.
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct ImuSample {
    accel: [f32; 3],
    gyro: [f32; 3],
    stamp_ns: u64,
    seq: u32,
    flags: u16,
    kind: u8,
    spare: u8,
}
datahub::describe!(ImuSample {
    accel: [f32; 3],
    gyro: [f32; 3],
    stamp_ns: u64,
    seq: u32,
    flags: u16,
    kind: u8,
    spare: u8
});

/// The same fields with two swapped.
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct ImuSwapped {
    gyro: [f32; 3],
    accel: [f32; 3],
    stamp_ns: u64,
    seq: u32,
    flags: u16,
    kind: u8,
    spare: u8,
}
datahub::describe!(ImuSwapped {
    gyro: [f32; 3],
    accel: [f32; 3],
    stamp_ns: u64,
    seq: u32,
    flags: u16,
    kind: u8,
    spare: u8
});

/// A description that leaves a field out.
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Partial {
    a: u64,
    b: u64,
}
datahub::describe!(Partial { a: u64 });

/// The layout as a numpy dtype would give it, written by hand.
fn imu_by_hand() -> ZoneLayout {
    ZoneLayout::new(40, 8)
        .array("accel", Scalar::F32, 0, 3)
        .array("gyro", Scalar::F32, 12, 3)
        .field("stamp_ns", Scalar::U64, 24)
        .field("seq", Scalar::U32, 32)
        .field("flags", Scalar::U16, 36)
        .field("kind", Scalar::U8, 38)
        .field("spare", Scalar::U8, 39)
}

#[test]
fn a_described_struct_and_its_hand_written_field_list_have_one_fingerprint() {
    let derived = SchemaLayout::slots(Imu::zone_layout().unwrap());
    let by_hand = SchemaLayout::slots(imu_by_hand());
    assert_eq!(derived.canonical().unwrap(), by_hand.canonical().unwrap());
    assert_eq!(
        derived.fingerprint().unwrap(),
        by_hand.fingerprint().unwrap()
    );
    assert_eq!(
        Schema::of::<Imu>(1).unwrap(),
        Schema::from_layout(&by_hand, 1).unwrap()
    );
    assert_eq!(
        Schema::of::<Imu>(1).unwrap().fingerprint().to_string(),
        by_hand.fingerprint().unwrap().to_string()
    );
    assert_ne!(
        Schema::of::<Imu>(1).unwrap(),
        Schema::of::<ImuSwapped>(1).unwrap(),
        "swapping two fields changes the fingerprint"
    );
    assert!(matches!(
        Partial::zone_layout(),
        Err(LayoutError::Incomplete {
            covered: 8,
            size: 16
        })
    ));
}

#[test]
fn typed_blocks_negotiate_by_layout_not_by_type_name() {
    let n = name("imu");
    let mut p = TypedProducer::<Imu>::create(&n, Config::new(Policy::Sequential), 1).unwrap();
    assert!(matches!(
        TypedConsumer::<ImuSwapped>::attach(&n, Expectations::new(), 1, T),
        Err(Error::SchemaMismatch { .. })
    ));
    // Same bytes under another name: accepted, and it reads what was sent.
    let mut c = TypedConsumer::<ImuSample>::attach(&n, Expectations::new(), 1, T).unwrap();
    let sent = Imu {
        accel: [1.0, 2.0, 3.0],
        gyro: [4.0, 5.0, 6.0],
        stamp_ns: 7,
        seq: 8,
        flags: 9,
        kind: 10,
        spare: 0,
    };
    p.send(&sent, T).unwrap();
    let (_, got) = c.recv(T).unwrap();
    assert_eq!(bytemuck::bytes_of(&got), bytemuck::bytes_of(&sent));
    assert!(matches!(
        TypedProducer::<Partial>::create(&name("partial"), Config::new(Policy::Sequential), 1),
        Err(Error::InvalidConfig { .. })
    ));
}
