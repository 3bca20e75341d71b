//! Helpers shared by the protocol's integration tests.

use serde::de::{self, Visitor};

/// The variant names serde knows for `T`, in declaration order (which is
/// also the binary tag order). Read from what the derived `Deserialize`
/// passes to `deserialize_enum`, so a new variant can never be missed.
pub fn variant_names<T: de::DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not an enum"))
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = variants;
            Err(de::Error::custom("probed"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map
            struct identifier ignored_any
        }
    }

    let mut names: &'static [&'static str] = &[];
    assert!(T::deserialize(Probe(&mut names)).is_err());
    assert!(!names.is_empty(), "not an enum");
    names
}
