//! MAC suites, per-device-and-epoch key derivation, chain values and constant-time comparison
//!
//! A token's tag is the end of a chain: `t0 = MAC(epoch key, identifier)`, then
//! `t(i+1) = MAC(t(i), caveat i)`. Whoever holds `t(i)` can extend the chain (attenuate) but
//! cannot step back, because that would invert the MAC. Two suites sit behind the algorithm
//! byte: keyed BLAKE3 (the default: one compression per short caveat) and HMAC-SHA256 (the
//! macaroon construction, for peers that only trust SHA-2).
//!
//! Secrets live in [`RootSecret`] and [`ChainValue`], which zeroize on drop and print redacted,
//! and every keyed hash state this module holds is wiped when it is dropped
//! ([`WipedHmacSha256`]; the BLAKE3 suite calls one-shot functions and holds no state).
//! Copies the compiler or the hash libraries make on their own stack frames are outside our
//! control; the types guarantee only that the values we own are wiped.

use hmac::digest::FixedOutputReset;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::DecodeError;
use crate::values::{DeviceId, Epoch};

/// Length of every key, chain value and tag.
pub const TAG_LEN: usize = 32;

/// Domain-separation context of the keyed-BLAKE3 epoch key derivation. BLAKE3's `derive_key`
/// wants a hard-coded, globally unique, application-specific string.
const BLAKE3_EPOCH_KEY_CONTEXT: &str = "cxl-lab-cap 2025 device epoch root key v1";

/// Label prefixed to the HMAC-SHA256 epoch key derivation input, for the same reason.
const HMAC_EPOCH_KEY_LABEL: &[u8] = b"cxl-lab-cap device epoch root key v1";

/// The MAC suite of a token. Its byte is part of the MACed identifier, so a token cannot be
/// re-labelled to another suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Algorithm {
    /// `blake3::keyed_hash` for the chain, `blake3::derive_key` for epoch keys.
    KeyedBlake3 = 1,
    /// HMAC-SHA256 for the chain and for epoch keys, as in macaroons.
    HmacSha256 = 2,
}

impl Algorithm {
    /// Every suite this library implements.
    pub const ALL: [Algorithm; 2] = [Algorithm::KeyedBlake3, Algorithm::HmacSha256];

    /// The suite of a wire byte.
    pub const fn from_byte(byte: u8) -> Result<Self, DecodeError> {
        match byte {
            1 => Ok(Algorithm::KeyedBlake3),
            2 => Ok(Algorithm::HmacSha256),
            unknown => Err(DecodeError::UnknownAlgorithm(unknown)),
        }
    }

    /// The wire byte.
    pub const fn byte(self) -> u8 {
        self as u8
    }

    /// Dense index for per-suite tables.
    pub(crate) const fn index(self) -> usize {
        self as usize - 1
    }
}

/// The device's long-term secret, from which every epoch key is derived.
///
/// It never leaves the device service, zeroizes on drop and prints as `RootSecret(..)`. The
/// bytes live on the heap, at one address for the secret's whole life: moving a `RootSecret`
/// (or the `Device` that owns it) copies a pointer, never the secret.
#[derive(Clone)]
pub struct RootSecret(Box<[u8; TAG_LEN]>);

impl RootSecret {
    /// Wraps 32 bytes of secret randomness (from the OS or a hardware RNG). The array passed in
    /// is wiped; copies the caller still holds are the caller's to wipe.
    pub fn from_bytes(secret_bytes: [u8; TAG_LEN]) -> Self {
        let secret = Self::move_to_heap(secret_bytes);
        wipe_stack_below_caller();
        secret
    }

    // Not inlined, so that every stack slot the copy touched lies below `from_bytes`, where
    // the wipe reaches.
    #[inline(never)]
    fn move_to_heap(mut secret_bytes: [u8; TAG_LEN]) -> Self {
        let mut secret = Self(Box::new([0; TAG_LEN]));
        secret.0.copy_from_slice(&secret_bytes);
        secret_bytes.zeroize();
        secret
    }
}

#[cfg(test)]
impl RootSecret {
    /// Where the secret bytes are, for the tests that check they never move.
    pub(crate) fn bytes_address(&self) -> *const u8 {
        self.0.as_ptr()
    }
}

impl Zeroize for RootSecret {
    fn zeroize(&mut self) {
        self.0.as_mut().zeroize();
    }
}

impl Drop for RootSecret {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for RootSecret {}

impl std::fmt::Debug for RootSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("RootSecret(..)")
    }
}

/// A 32-byte chain key: an epoch key, an intermediate chain value or a tag.
///
/// A tag is the bearer secret of a token (it keys the next attenuation step), so it gets the
/// same care as a key: zeroized on drop, redacted in `Debug`, compared in constant time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ChainValue([u8; TAG_LEN]);

impl ChainValue {
    pub(crate) fn from_bytes(value_bytes: [u8; TAG_LEN]) -> Self {
        Self(value_bytes)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; TAG_LEN] {
        &self.0
    }

    /// Constant-time equality with a tag taken from a token, so that the time to reject a
    /// forgery says nothing about how many leading bytes were right.
    pub fn matches(&self, tag_bytes: &[u8; TAG_LEN]) -> bool {
        bool::from(self.0.ct_eq(tag_bytes))
    }
}

impl std::fmt::Debug for ChainValue {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ChainValue(..)")
    }
}

/// Stack bytes overwritten after handling the root secret: more than key derivation and the
/// hash libraries below it use (`mac::tests::key_derivation_leaves_no_secret_on_the_stack`
/// checks that on x86-64).
const STACK_WIPE_BYTES: usize = 16 * 1024;

/// Overwrites the stack just below the caller's frame, where the functions it called left
/// their locals: the hash libraries keep the root secret, keys and keyed states in their own
/// frames and do not wipe them. Used after the rare operations that touch the root secret
/// (wrapping it, deriving epoch keys: a few microseconds each), not after each MAC, where it
/// would cost more than the MAC.
#[inline(never)]
fn wipe_stack_below_caller() {
    // Words, not bytes: an eighth of the volatile stores.
    let mut scratch = [0u64; STACK_WIPE_BYTES / 8];
    // Volatile writes: the compiler cannot drop stores to memory that is never read again.
    scratch.zeroize();
    std::hint::black_box(&scratch);
}

/// The epoch key of every suite, in [`Algorithm::index`] order. The keys are derived straight
/// into a heap allocation that never moves, and the stack the derivation used is wiped, so the
/// root secret and the keys are left nowhere else this library controls.
pub(crate) fn derive_epoch_keys(
    root_secret: &RootSecret,
    device_id: DeviceId,
    epoch: Epoch,
) -> Box<[ChainValue; Algorithm::ALL.len()]> {
    let keys = derive_epoch_keys_on_heap(root_secret, device_id, epoch);
    wipe_stack_below_caller();
    keys
}

// Not inlined, so that every temporary of the derivation lies below `derive_epoch_keys`.
#[inline(never)]
fn derive_epoch_keys_on_heap(
    root_secret: &RootSecret,
    device_id: DeviceId,
    epoch: Epoch,
) -> Box<[ChainValue; Algorithm::ALL.len()]> {
    let mut keys = Box::new(Algorithm::ALL.map(|_| ChainValue([0; TAG_LEN])));
    for algorithm in Algorithm::ALL {
        keys[algorithm.index()] = derive_epoch_key(algorithm, root_secret, device_id, epoch);
    }
    keys
}

/// Derives the root key of one device, epoch and suite.
///
/// The suite is part of the input so that the two suites never share a key, and the device id
/// so that two devices provisioned with the same secret by mistake still never accept each
/// other's tokens.
pub(crate) fn derive_epoch_key(
    algorithm: Algorithm,
    root_secret: &RootSecret,
    device_id: DeviceId,
    epoch: Epoch,
) -> ChainValue {
    let mut derivation_input = [0u8; TAG_LEN + 1 + 8 + 8];
    derivation_input[..TAG_LEN].copy_from_slice(root_secret.0.as_slice());
    derivation_input[TAG_LEN] = algorithm.byte();
    derivation_input[TAG_LEN + 1..TAG_LEN + 9].copy_from_slice(&device_id.0.to_le_bytes());
    derivation_input[TAG_LEN + 9..].copy_from_slice(&epoch.0.to_le_bytes());
    let key = match algorithm {
        Algorithm::KeyedBlake3 => blake3::derive_key(BLAKE3_EPOCH_KEY_CONTEXT, &derivation_input),
        Algorithm::HmacSha256 => {
            let mut hmac = WipedHmacSha256::new(root_secret.0.as_slice());
            hmac.update(HMAC_EPOCH_KEY_LABEL);
            hmac.update(&derivation_input[TAG_LEN..]);
            hmac.finalize()
        }
    };
    derivation_input.zeroize();
    ChainValue(key)
}

/// One step of the chain: the MAC of `message` under `key`.
pub(crate) fn chain_step(algorithm: Algorithm, key: &ChainValue, message: &[u8]) -> ChainValue {
    match algorithm {
        Algorithm::KeyedBlake3 => {
            let mut mac = blake3::keyed_hash(&key.0, message);
            let chain_value = ChainValue(*mac.as_bytes());
            mac.zeroize();
            chain_value
        }
        Algorithm::HmacSha256 => {
            let mut hmac = WipedHmacSha256::new(&key.0);
            hmac.update(message);
            ChainValue(hmac.finalize())
        }
    }
}

/// An HMAC-SHA256 state that is wiped when dropped. Once keyed, its inner and outer hash
/// states are as good as the key (they compute the MAC of any message), and `hmac` 0.12 does
/// not zeroize them itself.
struct WipedHmacSha256(Hmac<Sha256>);

impl WipedHmacSha256 {
    fn new(key: &[u8]) -> Self {
        Self(<Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length"))
    }

    fn update(&mut self, message: &[u8]) {
        self.0.update(message);
    }

    /// The MAC. Finalizes in place (`finalize_into_reset`, from `hmac`'s `reset` feature)
    /// rather than by value, so the state stays here for `Drop` to wipe.
    fn finalize(mut self) -> [u8; TAG_LEN] {
        let mut mac = [0u8; TAG_LEN];
        FixedOutputReset::finalize_into_reset(&mut self.0, (&mut mac).into());
        mac
    }
}

impl Drop for WipedHmacSha256 {
    fn drop(&mut self) {
        // SAFETY: `Hmac<Sha256>` is flat data (SHA-256 states, block counters, a block buffer
        // and its position): no pointers, no `Drop` of its own, and all zeroes is a valid value
        // of every field. It is not used after this.
        unsafe { zeroize::zeroize_flat_type(&mut self.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_keys_differ_per_suite_device_and_epoch() {
        let secret = RootSecret::from_bytes([7; TAG_LEN]);
        let base = derive_epoch_key(Algorithm::KeyedBlake3, &secret, DeviceId(1), Epoch(1));
        let other_suite = derive_epoch_key(Algorithm::HmacSha256, &secret, DeviceId(1), Epoch(1));
        let other_device = derive_epoch_key(Algorithm::KeyedBlake3, &secret, DeviceId(2), Epoch(1));
        let other_epoch = derive_epoch_key(Algorithm::KeyedBlake3, &secret, DeviceId(1), Epoch(2));
        for different in [&other_suite, &other_device, &other_epoch] {
            assert!(!base.matches(different.as_bytes()));
        }
        let same = derive_epoch_key(Algorithm::KeyedBlake3, &secret, DeviceId(1), Epoch(1));
        assert!(base.matches(same.as_bytes()));
    }

    /// The bytes of the value at `value`.
    ///
    /// SAFETY: `value` points to `size_of::<T>()` readable, initialized bytes.
    unsafe fn bytes_at<T>(value: *const T) -> Vec<u8> {
        unsafe { std::slice::from_raw_parts(value.cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
    }

    #[test]
    fn keyed_hmac_state_is_wiped_when_dropped() {
        // Zeroed first, so padding bytes are initialized too.
        let mut slot = std::mem::MaybeUninit::<WipedHmacSha256>::zeroed();
        slot.write(WipedHmacSha256::new(&[0x5a; TAG_LEN]));
        // SAFETY: the slot is allocated and initialized for the whole test.
        let keyed = unsafe { bytes_at(slot.as_ptr()) };
        assert!(
            keyed.iter().any(|byte| *byte != 0),
            "a keyed state holds key material"
        );
        // SAFETY: the slot holds an initialized value, dropped once and not used again.
        unsafe { slot.assume_init_drop() };
        // SAFETY: dropping zeroized every byte in place; nothing was deallocated.
        let dropped = unsafe { bytes_at(slot.as_ptr()) };
        assert!(dropped.iter().all(|byte| *byte == 0));
    }

    /// Copies the `window.len()` bytes just below the stack pointer into `window`: the dead
    /// frames of the functions the caller called last.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn copy_dead_stack(window: &mut [u8]) {
        let (window_start, window_len) = (window.as_mut_ptr(), window.len());
        // SAFETY: reads `window_len` bytes below the stack pointer, which lie inside this
        // thread's mapped stack (the window is far smaller than it), and writes them into
        // `window`, which is that long. Nothing below the stack pointer is Rust-owned memory.
        unsafe {
            std::arch::asm!(
                "mov rsi, rsp",
                "sub rsi, rcx",
                "rep movsb",
                inout("rcx") window_len => _,
                inout("rdi") window_start => _,
                out("rsi") _,
                options(nostack),
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn key_derivation_leaves_no_secret_on_the_stack() {
        let secret_bytes = *b"root secret: find me on stack!!!";
        let secret = RootSecret::from_bytes(secret_bytes);
        let mut dead_stack = vec![0u8; 2 * STACK_WIPE_BYTES];
        let keys = derive_epoch_keys(&secret, DeviceId(9), Epoch(4));
        copy_dead_stack(&mut dead_stack);
        // Every form the hash libraries hold the secret in: the BLAKE3 derivation input
        // starts with it, and HMAC XORs the key into its inner and outer pads.
        let inner_pad = secret_bytes.map(|byte| byte ^ 0x36);
        let outer_pad = secret_bytes.map(|byte| byte ^ 0x5c);
        let mut secrets = vec![
            ("the root secret", secret_bytes),
            ("the HMAC inner pad", inner_pad),
            ("the HMAC outer pad", outer_pad),
        ];
        for algorithm in Algorithm::ALL {
            secrets.push(("an epoch key", *keys[algorithm.index()].as_bytes()));
        }
        let left_on_stack: Vec<&str> = secrets
            .iter()
            .filter(|(_, bytes)| dead_stack.windows(TAG_LEN).any(|window| window == bytes))
            .map(|(what, _)| *what)
            .collect();
        assert!(
            left_on_stack.is_empty(),
            "left on the stack: {left_on_stack:?}"
        );
    }

    #[test]
    fn moving_a_root_secret_leaves_its_bytes_where_they_are() {
        let secret = RootSecret::from_bytes([0x11; TAG_LEN]);
        let bytes_at = secret.bytes_address();
        let moved = std::hint::black_box(Box::new(secret));
        assert_eq!(moved.bytes_address(), bytes_at);
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let secret = RootSecret::from_bytes([0xab; TAG_LEN]);
        let chain_value = ChainValue::from_bytes([0xcd; TAG_LEN]);
        let printed = format!("{secret:?} {chain_value:?}");
        assert_eq!(printed, "RootSecret(..) ChainValue(..)");
    }

    #[test]
    fn hmac_suite_matches_rfc_4231_test_case_2() {
        // RFC 4231 case 2 uses a 4-byte key; chain_step takes 32-byte keys, so check the same
        // HMAC construction through the derivation-free path with a zero-padded key, which
        // HMAC defines as equal to the short key.
        let mut padded_key = [0u8; TAG_LEN];
        padded_key[..4].copy_from_slice(b"Jefe");
        let mac = chain_step(
            Algorithm::HmacSha256,
            &ChainValue::from_bytes(padded_key),
            b"what do ya want for nothing?",
        );
        let expected: [u8; 32] = [
            0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
            0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9,
            0x64, 0xec, 0x38, 0x43,
        ];
        assert!(mac.matches(&expected));
    }
}
