//! The operator's own maps of objects: one key string per object, and room given back after
//! mass deletions.

use std::collections::HashMap;
use std::hash::Hash;

/// `namespace/name`, the one string by which the operator's maps key an object of a
/// namespace (neither part can hold a '/').
pub fn object_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Gives back the room of a map that shrank below a quarter of it, as after deleting most of
/// the resources: a map keeps its largest size otherwise.
pub fn shrink<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_emptied_gives_back_its_room() {
        let mut map: HashMap<u32, u32> = (0..10_000).map(|i| (i, i)).collect();
        map.retain(|k, _| *k < 10);
        shrink(&mut map);
        assert!(map.capacity() < 100, "capacity {}", map.capacity());
        let mut small: HashMap<u32, u32> = (0..10).map(|i| (i, i)).collect();
        let before = small.capacity();
        shrink(&mut small);
        assert_eq!(small.capacity(), before, "small maps are left alone");
    }
}
