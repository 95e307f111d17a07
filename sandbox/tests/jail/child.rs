//! The child side: scenarios run in a fresh process started by the runner.
//!
//! `filter:<role>:<action>` installs only the role's seccomp filter (what `jail` installs last)
//! and then performs `action`; `jail:<role>` runs the whole jail and then obeys commands read
//! from stdin; `jail-threaded:<role>` starts a second thread first (the jail must refuse).
//! Lines on stdout tell the runner where the child is.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io::{BufRead, IoSlice, IoSliceMut, Write};
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, mpsc};
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll, ppoll};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::mman::{MapFlags, MmapAdvise, ProtFlags, madvise, mmap_anonymous, mprotect, munmap};
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockFlag, SockType, SockaddrIn, bind,
    getsockname, recv, recvfrom, recvmmsg, recvmsg, send, sendmmsg, sendmsg, sendto, socket, socketpair,
};
use nix::sys::uio::{readv, writev};
use nix::unistd::{Uid, getpid, gettid, pipe, read, write};
use yavipin_sandbox::{JailSpec, Policy, Role, policy};

pub(crate) const SCENARIO: &str = "YAVIPIN_SANDBOX_SCENARIO";
pub(crate) const ENV_USER: &str = "YAVIPIN_SANDBOX_USER";
pub(crate) const ENV_ROOT: &str = "YAVIPIN_SANDBOX_ROOT";

/// Forbidden calls tried under both roles' filters.
pub(crate) const FORBIDDEN: &[&str] = &[
    "openat",
    "execve",
    "socket-inet",
    "socket-unix",
    "ptrace",
    "mmap-exec",
    "mprotect-exec",
    "thread",
    "setuid",
    "prctl",
    "kill",
    "tgkill-usr1",
    "epoll-create",
];

/// Calls netd may make but keyd may not.
pub(crate) const KEYD_FORBIDDEN: &[&str] = &["fcntl-getfl", "epoll-wait", "readv", "sendmmsg"];

/// Calls the parent may not make although a worker may (besides [`KEYD_FORBIDDEN`]): its
/// filter has no randomness (it needs none) and no `fork` (it starts nothing after setup).
pub(crate) const PARENT_FORBIDDEN: &[&str] = &["fork", "getrandom"];

/// Forbidden calls that need a resource made before the filter (all roles).
pub(crate) const FORBIDDEN_WITH_RESOURCES: &[&str] = &["fcntl-dupfd"];

/// Runs `scenario`; returning means `main` returns too.
pub(crate) fn run(scenario: &str) {
    // Deliberate SIGSYS/SIGABRT deaths must not leave core files in the working directory.
    setrlimit(Resource::RLIMIT_CORE, 0, 0).expect("RLIMIT_CORE");
    let parts: Vec<&str> = scenario.split(':').collect();
    match parts[..] {
        ["filter", role, action] => filter(policy_of(role), action),
        ["jail", role] => jail(role_of(role), false),
        ["jail-threaded", role] => jail(role_of(role), true),
        _ => {
            eprintln!("unknown scenario {scenario:?}");
            std::process::exit(100)
        }
    }
}

fn role_of(name: &str) -> Role {
    match name {
        "netd" => Role::Netd,
        "keyd" => Role::Keyd,
        _ => panic!("unknown role {name}"),
    }
}

fn policy_of(name: &str) -> Policy {
    match name {
        "parent" => Policy::Parent,
        worker => role_of(worker).into(),
    }
}

/// One line to the runner, written at once.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").expect("stdout");
    out.flush().expect("flush");
}

fn install(role: Policy) {
    let program = policy::compile(role).expect("policy compiles");
    seccompiler::apply_filter_all_threads(&program).expect("install the filter");
}

/// The release profile aborts on panic; in the test profile a hook does it.
fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        std::process::abort();
    }));
}

fn filter(role: Policy, action: &str) -> ! {
    match action {
        "permitted" => {
            let world = World::new(role);
            install(role);
            world.exercise(role);
            say("ok");
        }
        "abort" => {
            install(role);
            std::process::abort();
        }
        "panic" => {
            abort_on_panic();
            install(role);
            panic!("deliberate panic under the {role} filter");
        }
        "tsync" => tsync(role),
        forbidden => {
            let prepared = Forbidden::prepare();
            install(role);
            prepared.call(forbidden);
            say("survived");
        }
    }
    std::process::exit(0)
}

/// A second thread exists before the filter is installed by the main thread; the runner
/// inspects both threads in /proc, then the second thread makes a forbidden call.
fn tsync(role: Policy) {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (tid_tx, tid_rx) = mpsc::channel();
    let other = std::thread::spawn(move || {
        tid_tx.send(gettid()).expect("send tid");
        go_rx.recv().expect("go");
        let _ = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::empty(), None);
    });
    let tid = tid_rx.recv().expect("tid");
    install(role);
    say(&format!("ready {tid}"));
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("stdin");
    go_tx.send(()).expect("go");
    let _ = other.join();
}

/// Resources some forbidden calls need, made before the filter.
struct Forbidden {
    pair: (OwnedFd, OwnedFd),
    epoll: Epoll,
}

const PAGE: NonZeroUsize = NonZeroUsize::new(4096).expect("nonzero");

impl Forbidden {
    fn prepare() -> Self {
        let pair =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).expect("socketpair");
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll");
        Forbidden { pair, epoll }
    }

    /// Makes the forbidden call; returning means the filter let it through.
    fn call(&self, what: &str) {
        match what {
            "fcntl-dupfd" => {
                let _ = fcntl(self.pair.0.as_fd(), FcntlArg::F_DUPFD_CLOEXEC(100));
            }
            "fcntl-getfl" => {
                let _ = fcntl(self.pair.0.as_fd(), FcntlArg::F_GETFL);
            }
            "epoll-wait" => {
                let mut events = [EpollEvent::empty()];
                let _ = self.epoll.wait(&mut events, EpollTimeout::ZERO);
            }
            "readv" => {
                send(self.pair.1.as_raw_fd(), b"x", MsgFlags::empty()).expect("send");
                let mut buf = [0u8; 4];
                let _ = readv(self.pair.0.as_fd(), &mut [IoSliceMut::new(&mut buf)]);
            }
            "sendmmsg" => {
                let mut headers = MultiHeaders::<()>::preallocate(1, None);
                let iov = [[IoSlice::new(b"x")]];
                let _ = sendmmsg(self.pair.0.as_raw_fd(), &mut headers, &iov, [None], [], MsgFlags::empty());
            }
            other => forbidden_call(other),
        }
    }
}

/// Forbidden calls that need no resource prepared before the filter, so that a jailed child
/// can make them too.
fn forbidden_call(what: &str) {
    match what {
        "openat" => {
            let _ = std::fs::File::open("/etc/hostname");
        }
        "execve" => {
            let path = CString::new("/bin/true").expect("cstring");
            let _ = nix::unistd::execv(&path, &[&path]);
        }
        "socket-inet" => {
            let _ = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::empty(), None);
        }
        "socket-unix" => {
            let _ = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::empty(), None);
        }
        "ptrace" => {
            let _ = nix::sys::ptrace::traceme();
        }
        "mmap-exec" => {
            // SAFETY: maps a fresh page; nothing else refers to it.
            let _ = unsafe {
                mmap_anonymous(None, PAGE, ProtFlags::PROT_READ | ProtFlags::PROT_EXEC, MapFlags::MAP_PRIVATE)
            };
        }
        "mprotect-exec" => {
            // SAFETY: a fresh private page (read-write mappings are allowed); nothing reads or
            // runs it.
            unsafe {
                let page =
                    mmap_anonymous(None, PAGE, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_PRIVATE)
                        .expect("mmap rw is allowed");
                let _ = mprotect(page, PAGE.get(), ProtFlags::PROT_READ | ProtFlags::PROT_EXEC);
            }
        }
        "thread" => {
            let _ = std::thread::spawn(|| {}).join();
        }
        "setuid" => {
            let _ = nix::unistd::setuid(Uid::current());
        }
        "setuid-root" => {
            let _ = nix::unistd::setuid(Uid::from_raw(0));
        }
        "prctl" => {
            let _ = nix::sys::prctl::get_dumpable();
        }
        "kill" => {
            let _ = nix::sys::signal::kill(getpid(), None);
        }
        "tgkill-usr1" => {
            // Blocked so that, were it allowed, it would not end the process by itself.
            let mut usr1 = SigSet::empty();
            usr1.add(Signal::SIGUSR1);
            sigprocmask(SigmaskHow::SIG_BLOCK, Some(&usr1), None).expect("sigprocmask");
            let _ = nix::sys::pthread::pthread_kill(nix::sys::pthread::pthread_self(), Signal::SIGUSR1);
        }
        "epoll-create" => {
            let _ = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC);
        }
        "fork" => {
            // SAFETY: the child only exits at once; no lock or allocation is touched.
            if let Ok(nix::unistd::ForkResult::Child) = unsafe { nix::unistd::fork() } {
                std::process::exit(0);
            }
        }
        "getrandom" => random(),
        other => panic!("unknown forbidden call {other}"),
    }
}

/// Resources a worker's event loop has before it is jailed: socketpairs, a pipe standing in for
/// the tun device, a UDP socket on loopback, an epoll instance.
struct World {
    pair: (OwnedFd, OwnedFd),
    pipe: (OwnedFd, OwnedFd),
    udp: OwnedFd,
    udp_addr: SockaddrIn,
    epoll: Epoll,
    /// The parent's: a listening control socket with a client that sent its request, a
    /// netlink socket, a child to reap.
    control: (std::os::unix::net::UnixListener, std::os::unix::net::UnixStream),
    socket_path: PathBuf,
    netlink: OwnedFd,
    child: Mutex<Option<std::process::Child>>,
    pidfd: Option<OwnedFd>,
}

impl World {
    fn new(role: Policy) -> Self {
        let pair =
            socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).expect("socketpair");
        let pipe = pipe().expect("pipe");
        let udp = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).expect("udp socket");
        bind(udp.as_raw_fd(), &"127.0.0.1:0".parse::<SockaddrIn>().expect("addr")).expect("bind");
        let udp_addr: SockaddrIn = getsockname(udp.as_raw_fd()).expect("getsockname");
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll");
        let socket_path = std::env::temp_dir().join(format!("yavipin-filter-{}.sock", std::process::id()));
        let listener = std::os::unix::net::UnixListener::bind(&socket_path).expect("bind");
        let mut client = std::os::unix::net::UnixStream::connect(&socket_path).expect("connect");
        client.write_all(b"status\n").expect("request");
        let netlink = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            nix::sys::socket::SockProtocol::NetlinkRoute,
        )
        .expect("netlink socket");
        // A child to kill and reap, for the parent only (no other role may kill it).
        let child = (role == Policy::Parent).then(|| {
            std::process::Command::new("/bin/sleep")
                .arg("30")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("a child")
        });
        // SAFETY: pidfd_open takes a pid and flags; the result is a new descriptor we own.
        let pidfd = child.as_ref().map(|child| unsafe {
            let fd = libc::syscall(libc::SYS_pidfd_open, libc::pid_t::try_from(child.id()).expect("pid"), 0);
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(i32::try_from(fd).expect("a pidfd"))
        });
        World {
            pair,
            pipe,
            udp,
            udp_addr,
            epoll,
            control: (listener, client),
            socket_path,
            netlink,
            child: Mutex::new(child),
            pidfd,
        }
    }

    /// Every kind of call the role's event loop makes, under the filter.
    fn exercise(self, role: Policy) {
        common(&self);
        match role {
            Policy::Netd => {
                random();
                netd_only(&self);
            }
            Policy::Keyd => random(),
            Policy::Parent => parent_only(&self),
        }
        // close
        drop(self);
    }
}

fn common(w: &World) {
    let (a, b) = (w.pair.0.as_raw_fd(), w.pair.1.as_raw_fd());
    // sendmsg / recvmsg on the socketpair
    sendmsg::<()>(a, &[IoSlice::new(b"frame")], &[], MsgFlags::empty(), None).expect("sendmsg");
    let mut buf = [0u8; 64];
    let n = recvmsg::<()>(b, &mut [IoSliceMut::new(&mut buf)], None, MsgFlags::empty()).expect("recvmsg").bytes;
    assert_eq!(&buf[..n], b"frame");
    // send / recv (sendto / recvfrom), write / read
    send(a, b"ping", MsgFlags::empty()).expect("send");
    assert_eq!(recv(b, &mut buf, MsgFlags::empty()).expect("recv"), 4);
    write(&w.pair.1, b"pong").expect("write");
    assert_eq!(read(&w.pair.0, &mut buf).expect("read"), 4);
    // poll and ppoll
    send(a, b"x", MsgFlags::empty()).expect("send");
    let mut fds = [PollFd::new(w.pair.1.as_fd(), PollFlags::POLLIN)];
    assert_eq!(poll(&mut fds, PollTimeout::from(1000u16)).expect("poll"), 1);
    let mut fds = [PollFd::new(w.pair.1.as_fd(), PollFlags::POLLIN)];
    assert_eq!(ppoll(&mut fds, None, None).expect("ppoll"), 1);
    let _ = recv(b, &mut buf, MsgFlags::empty()).expect("recv");
    // clock_gettime: the vDSO, and the syscall itself (the vDSO's fallback)
    let _ = std::time::Instant::now();
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec to the valid pointer given.
    let rc = unsafe { libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_MONOTONIC, &raw mut ts) };
    assert_eq!(rc, 0, "clock_gettime syscall");
    // memory: brk (small), mmap (large), mremap (realloc), munmap, madvise, mprotect (no exec)
    let small: Vec<Box<[u8; 256]>> = (0..64).map(|_| Box::new([1u8; 256])).collect();
    let mut big = vec![7u8; 8 << 20];
    big.resize(24 << 20, 8);
    let _ = (small, big);
    // SAFETY: a fresh private mapping, used only here and unmapped at the end.
    unsafe {
        let page = mmap_anonymous(None, PAGE, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_PRIVATE)
            .expect("mmap rw");
        madvise(page, PAGE.get(), MmapAdvise::MADV_DONTNEED).expect("madvise");
        mprotect(page, PAGE.get(), ProtFlags::PROT_READ).expect("mprotect without exec");
        munmap(page, PAGE.get()).expect("munmap");
    }
    // futex: a timed condition-variable wait
    let pair = (Mutex::new(false), Condvar::new());
    let guard = pair.0.lock().expect("lock");
    let (_guard, timeout) = pair.1.wait_timeout(guard, Duration::from_millis(5)).expect("wait");
    assert!(timeout.timed_out());
    // signal mask, ids for abort()
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_SETMASK, None, Some(&mut old)).expect("sigprocmask");
    let _ = (getpid(), gettid());
}

/// Nonces and keys, in the workers only.
fn random() {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("getrandom");
}

/// The parent's event loop after setup: a control client accepted non-blocking and
/// answered, a netlink request and its acknowledgement, a child reaped, its control socket
/// removed at exit.
fn parent_only(world: &World) {
    let (listener, client) = &world.control;
    let served =
        nix::sys::socket::accept4(listener, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC).expect("accept4");
    let mut buf = [0u8; 64];
    assert_eq!(read(&served, &mut buf).expect("read request"), 7);
    write(&served, b"{}\n").expect("write reply");
    drop(served);
    // RTM_GETLINK for ifindex 1 (lo), answered by the kernel: sendto, recvfrom.
    let mut request = [0u8; 32];
    request[..4].copy_from_slice(&32u32.to_ne_bytes());
    request[4..6].copy_from_slice(&18u16.to_ne_bytes());
    request[6..8].copy_from_slice(&(1u16 | 4).to_ne_bytes());
    request[20..24].copy_from_slice(&1i32.to_ne_bytes());
    let kernel = nix::sys::socket::NetlinkAddr::new(0, 0);
    sendto(world.netlink.as_raw_fd(), &request, &kernel, MsgFlags::empty()).expect("netlink sendto");
    let mut answer = [0u8; 4096];
    assert!(
        recvfrom::<nix::sys::socket::NetlinkAddr>(world.netlink.as_raw_fd(), &mut answer).expect("recvfrom").0 > 16
    );
    let _ = client;
    let mut child = world.child.lock().expect("child").take().expect("a child");
    // SAFETY: pidfd_send_signal with a null siginfo reads no memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            world.pidfd.as_ref().expect("a pidfd").as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<u8>(),
            0,
        )
    };
    assert_eq!(rc, 0, "pidfd_send_signal(SIGKILL)");
    let _ = child.wait().expect("wait4");
    std::fs::remove_file(&world.socket_path).expect("unlink");
}

fn netd_only(world: &World) {
    let fd = world.udp.as_raw_fd();
    // sendto / recvfrom on UDP
    sendto(fd, b"datagram", &world.udp_addr, MsgFlags::empty()).expect("sendto");
    let mut buf = [0u8; 64];
    let (len, _from) = recvfrom::<SockaddrIn>(fd, &mut buf).expect("recvfrom");
    assert_eq!(&buf[..len], b"datagram");
    // sendmmsg / recvmmsg on UDP
    {
        let mut headers = MultiHeaders::<SockaddrIn>::preallocate(2, None);
        let iov = [[IoSlice::new(b"one")], [IoSlice::new(b"two")]];
        let sent =
            sendmmsg(fd, &mut headers, &iov, [Some(world.udp_addr), Some(world.udp_addr)], [], MsgFlags::empty())
                .expect("sendmmsg")
                .count();
        assert_eq!(sent, 2);
    }
    {
        let mut bufs = [[0u8; 16]; 2];
        let [b0, b1] = &mut bufs;
        let mut slices = [[IoSliceMut::new(b0)], [IoSliceMut::new(b1)]];
        let mut headers = MultiHeaders::<SockaddrIn>::preallocate(2, None);
        let got =
            recvmmsg(fd, &mut headers, slices.iter_mut(), MsgFlags::MSG_DONTWAIT, None).expect("recvmmsg").count();
        assert!(got >= 1);
    }
    // A descriptor arrives over the socketpair (SCM_RIGHTS), is made non-blocking with
    // fcntl(F_GETFL/F_SETFL), joins the epoll set, and the loop waits on it.
    let (parent_end, netd_end) = (world.pair.0.as_raw_fd(), world.pair.1.as_raw_fd());
    let passed = [world.pipe.0.as_raw_fd()];
    sendmsg::<()>(parent_end, &[IoSlice::new(b"fd")], &[ControlMessage::ScmRights(&passed)], MsgFlags::empty(), None)
        .expect("sendmsg SCM_RIGHTS");
    let mut buf = [0u8; 8];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg =
        recvmsg::<()>(netd_end, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).expect("recvmsg SCM_RIGHTS");
    let received = msg
        .cmsgs()
        .expect("cmsgs")
        .find_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        })
        .expect("a descriptor");
    // SAFETY: the kernel just installed this descriptor for us; nothing else owns it.
    let received = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(received) };
    let flags = fcntl(received.as_fd(), FcntlArg::F_GETFL).expect("F_GETFL");
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(received.as_fd(), FcntlArg::F_SETFL(flags)).expect("F_SETFL");
    world.epoll.add(received.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 1)).expect("epoll_ctl add");
    // The "tun device": writev in, epoll_wait, readv out.
    writev(&world.pipe.1, &[IoSlice::new(b"hdr"), IoSlice::new(b"payload")]).expect("writev");
    let mut events = [EpollEvent::empty(); 4];
    let ready = world.epoll.wait(&mut events, EpollTimeout::from(1000u16)).expect("epoll_wait");
    assert_eq!(ready, 1);
    let (mut header, mut payload) = ([0u8; 3], [0u8; 7]);
    let len = readv(&received, &mut [IoSliceMut::new(&mut header), IoSliceMut::new(&mut payload)]).expect("readv");
    assert_eq!(len, 10);
    world.epoll.delete(received.as_fd()).expect("epoll_ctl del");
    drop(received);
}

fn jail(role: Role, threaded: bool) {
    let spec = JailSpec {
        user: std::env::var(ENV_USER).expect("user"),
        empty_root: PathBuf::from(std::env::var(ENV_ROOT).expect("root")),
        ..JailSpec::new(&[])
    };
    let parked = threaded.then(|| std::thread::spawn(std::thread::park));
    say(&format!("pre {}", open_fds()));
    match yavipin_sandbox::jail(role, &spec) {
        Err(e) => {
            eprintln!("{e}");
            say(&format!("error {}", e.step().name()));
            drop(parked);
            std::process::exit(3)
        }
        Ok(jailed) => {
            assert_eq!(jailed.role(), role);
            say(&format!("ready env={}", std::env::vars_os().count()));
            commands(role);
        }
    }
}

fn open_fds() -> String {
    let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// After the jail: obey one command from stdin.
fn commands(role: Role) {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("stdin");
    match line.trim() {
        "" | "exit" => std::process::exit(0),
        // Back to main, which returns: std's runtime cleanup runs under the filter.
        "return" => say("returning"),
        "abort" => std::process::abort(),
        "panic" => {
            abort_on_panic();
            panic!("deliberate panic in the jailed {role}");
        }
        other => {
            forbidden_call(other);
            say("survived");
            std::process::exit(0)
        }
    }
}
