//! Keeping Postgres's signals off the HTTP threads.

/// Postgres handles its signals on the main thread. Taken on an HTTP thread instead, a signal
/// would run a Postgres handler there (which must never happen off the main thread) and make
/// a socket call with a timeout fail with EINTR. While this guard lives, the calling thread
/// blocks every signal; dropping it restores the previous mask.
pub(super) struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    pub(super) fn new() -> SignalsBlocked {
        // SAFETY: sigfillset initialises the set it is given; pthread_sigmask only changes the
        // calling thread's mask and writes the previous one to `old`.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            SignalsBlocked(old)
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new` on this same thread.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut());
        }
    }
}
