//! The few pieces of the FUSE kernel ABI (`include/uapi/linux/fuse.h`) the
//! relay needs to classify messages without parsing them fully: the request
//! and reply headers, three opcodes and the `FUSE_INTERRUPT` body. Everything
//! else is left to fuser.
//!
//! All fields are in host byte order, as the kernel writes them.

/// `sizeof(struct fuse_in_header)`: len u32, opcode u32, unique u64,
/// nodeid u64, uid u32, gid u32, pid u32, total_extlen u16, padding u16.
pub(crate) const IN_HEADER_LEN: usize = 40;

/// `sizeof(struct fuse_out_header)`: len u32, error i32, unique u64.
pub(crate) const OUT_HEADER_LEN: usize = 16;

/// `FUSE_WRITE`: the only request that may block for long (an offline that
/// retries until its writer is signalled).
pub(crate) const FUSE_WRITE: u32 = 16;

/// `FUSE_INTERRUPT`: the process behind request `fuse_interrupt_in.unique`
/// got a signal while waiting for the answer.
pub(crate) const FUSE_INTERRUPT: u32 = 36;

/// `FUSE_DESTROY`: tells the file system the connection is over.
pub(crate) const FUSE_DESTROY: u32 = 38;

/// The parts of a request header the relay looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RequestHeader {
    pub(crate) opcode: u32,
    pub(crate) unique: u64,
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at + 4)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    let bytes = buf.get(at..at + 8)?;
    Some(u64::from_ne_bytes(bytes.try_into().ok()?))
}

/// The header of a request read from `/dev/fuse`, or `None` if `msg` is too
/// short to hold one.
pub(crate) fn request_header(msg: &[u8]) -> Option<RequestHeader> {
    if msg.len() < IN_HEADER_LEN {
        return None;
    }
    Some(RequestHeader {
        opcode: u32_at(msg, 4)?,
        unique: u64_at(msg, 8)?,
    })
}

/// For a `FUSE_INTERRUPT` request: the `unique` of the request to interrupt
/// (`struct fuse_interrupt_in { u64 unique; }` right after the header).
pub(crate) fn interrupt_target(msg: &[u8]) -> Option<u64> {
    u64_at(msg, IN_HEADER_LEN)
}

/// The `unique` of a message the file system writes to `/dev/fuse`: the
/// request it answers, or 0 for a notification (whose `error` field then
/// carries the notification code).
pub(crate) fn reply_unique(msg: &[u8]) -> Option<u64> {
    if msg.len() < OUT_HEADER_LEN {
        return None;
    }
    u64_at(msg, 8)
}

/// A `FUSE_DESTROY` request as the kernel would send it, so that the session
/// loop ends cleanly when the connection goes away (the kernel sends none for
/// a plain `fuse` mount).
pub(crate) fn destroy_request(unique: u64) -> [u8; IN_HEADER_LEN] {
    let mut msg = [0u8; IN_HEADER_LEN];
    msg[0..4].copy_from_slice(&(IN_HEADER_LEN as u32).to_ne_bytes());
    msg[4..8].copy_from_slice(&FUSE_DESTROY.to_ne_bytes());
    msg[8..16].copy_from_slice(&unique.to_ne_bytes());
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(opcode: u32, unique: u64, body: &[u8]) -> Vec<u8> {
        let mut msg = vec![0u8; IN_HEADER_LEN];
        msg[0..4].copy_from_slice(&((IN_HEADER_LEN + body.len()) as u32).to_ne_bytes());
        msg[4..8].copy_from_slice(&opcode.to_ne_bytes());
        msg[8..16].copy_from_slice(&unique.to_ne_bytes());
        msg.extend_from_slice(body);
        msg
    }

    #[test]
    fn interrupt_request_names_the_interrupted_write() {
        let msg = request(FUSE_INTERRUPT, 43, &42u64.to_ne_bytes());
        let header = request_header(&msg).unwrap();
        assert_eq!(header.opcode, FUSE_INTERRUPT);
        assert_eq!(header.unique, 43);
        assert_eq!(interrupt_target(&msg), Some(42));
    }

    #[test]
    fn truncated_messages_are_not_misread() {
        assert_eq!(request_header(&[0u8; IN_HEADER_LEN - 1]), None);
        assert_eq!(interrupt_target(&request(FUSE_INTERRUPT, 1, &[])), None);
        assert_eq!(reply_unique(&[0u8; OUT_HEADER_LEN - 1]), None);
    }

    #[test]
    fn synthesized_destroy_parses_as_destroy() {
        let msg = destroy_request(7);
        let header = request_header(&msg).unwrap();
        assert_eq!(
            header,
            RequestHeader {
                opcode: FUSE_DESTROY,
                unique: 7
            }
        );
        assert_eq!(u32_at(&msg, 0), Some(IN_HEADER_LEN as u32));
    }
}
