//! Socket addresses in the kernel's layout, inline (no allocation).

/// A socket address in the kernel's layout (`sockaddr_in` or `sockaddr_in6`), inline; its
/// length follows from its family (so that a datagram request still fits a slot's 64 bytes).
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct RawAddr {
    /// Room for a `sockaddr_in6` (28 bytes), 4-aligned like it.
    storage: [u32; 7],
}

impl RawAddr {
    /// No address (family 0).
    pub(crate) const EMPTY: RawAddr = RawAddr { storage: [0; 7] };

    fn family(&self) -> i32 {
        // SAFETY: the storage starts with a sockaddr's family field (zero when empty).
        i32::from(unsafe { *self.storage.as_ptr().cast::<libc::sa_family_t>() })
    }

    /// The length of the sockaddr stored (0 for an unknown family).
    pub(crate) fn len(&self) -> u32 {
        match self.family() {
            libc::AF_INET => std::mem::size_of::<libc::sockaddr_in>() as u32,
            libc::AF_INET6 => std::mem::size_of::<libc::sockaddr_in6>() as u32,
            _ => 0,
        }
    }

    /// The address as std's, if it is an IPv4 or IPv6 one (the unspecified `0.0.0.0:0` for
    /// another family, such as a Unix datagram socket's sender).
    pub(crate) fn to_socket_addr(self) -> std::net::SocketAddr {
        // A sender shorter than its family's sockaddr left zeros (the room is cleared first).
        match self.family() {
            libc::AF_INET => {
                // SAFETY: a sockaddr_in fits the storage; its bytes are the kernel's or zeros.
                let sin = unsafe { *self.storage.as_ptr().cast::<libc::sockaddr_in>() };
                let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
                (ip, u16::from_be(sin.sin_port)).into()
            }
            libc::AF_INET6 => {
                // SAFETY: a sockaddr_in6 fits the storage; its bytes are the kernel's or zeros.
                let sin6 = unsafe { *self.storage.as_ptr().cast::<libc::sockaddr_in6>() };
                std::net::SocketAddrV6::new(
                    std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    u32::from_be(sin6.sin6_flowinfo),
                    sin6.sin6_scope_id,
                )
                .into()
            }
            _ => ([0, 0, 0, 0], 0).into(),
        }
    }

    pub(crate) fn new(addr: std::net::SocketAddr) -> Self {
        let mut raw = RawAddr::EMPTY;
        let ptr = raw.storage.as_mut_ptr();
        match addr {
            std::net::SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(v4.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: 16 bytes, 4-aligned, into a 28-byte 4-aligned buffer.
                unsafe { ptr.cast::<libc::sockaddr_in>().write(sin) };
            }
            std::net::SocketAddr::V6(v6) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: v6.flowinfo().to_be(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: v6.ip().octets(),
                    },
                    sin6_scope_id: v6.scope_id(),
                };
                // SAFETY: 28 bytes, 4-aligned, into a 28-byte 4-aligned buffer.
                unsafe { ptr.cast::<libc::sockaddr_in6>().write(sin6) };
            }
        }
        raw
    }

    pub(crate) fn as_ptr(&self) -> *const libc::sockaddr {
        self.storage.as_ptr().cast()
    }

    /// Where the kernel writes a sender's address (`ROOM` bytes).
    pub(crate) fn as_mut_ptr(&mut self) -> *mut libc::sockaddr {
        self.storage.as_mut_ptr().cast()
    }

    /// The bytes of room for an address.
    pub(crate) const ROOM: u32 = std::mem::size_of::<[u32; 7]>() as u32;
}

impl std::fmt::Debug for RawAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RawAddr({})", self.to_socket_addr())
    }
}
