package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	securejoin "github.com/cyphar/filepath-securejoin"
)

// shimSpec is what the node agent hands to the shim (a re-exec of itself, started in a fresh
// mount namespace) to build one container's file system view and exec its process.
//
// The container's root is an overlay whose read-only lower layer is the image's unpacked root
// file system (a pulled image) or the host's root (a host-mapped image: programs see the host's
// binaries) and whose upper layer is private to the container attempt, so it may write anywhere
// without touching the image, the host or other containers. On top:
// a fresh /proc, the host's /sys, a minimal /dev, a private /tmp, the pod's volumes at their
// mountPaths and the termination message file at terminationMessagePath.
type shimSpec struct {
	Lower                    string // the overlay's lower layer: an image's root, or "/"
	Rootfs, Upper, Work, Tmp string
	Mounts                   []shimMount
	CgroupProcs              string
	WorkingDir               string
	Argv, Env                []string
	StartErrorFile           string
	User                     *shimUser // nil: stay root
}

// shimUser is who the process runs as: set in the shim after the file system is built, before
// exec (the kernel drops every capability when the uid leaves 0).
type shimUser struct {
	UID, GID uint32
	Groups   []uint32
}

type shimMount struct {
	Source, Target string
	ReadOnly       bool
}

const shimArg = "__container-shim"

// shimMain runs in the child: any failure before exec is a container start error (exit 128).
func shimMain(specPath string) {
	var spec shimSpec
	var errFile *os.File // opened before chroot: its path is not reachable after
	fail := func(format string, a ...any) {
		msg := fmt.Sprintf(format, a...)
		if errFile != nil {
			_, _ = errFile.WriteString(msg)
		}
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(128)
	}
	raw, err := os.ReadFile(specPath)
	if err != nil {
		fail("read container spec: %v", err)
	}
	if err := json.Unmarshal(raw, &spec); err != nil {
		fail("parse container spec: %v", err)
	}
	if errFile, err = os.OpenFile(spec.StartErrorFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644); err != nil {
		fail("open %s: %v", spec.StartErrorFile, err)
	}
	// Join the memory cgroup first, so everything after (and the program) is accounted.
	if spec.CgroupProcs != "" {
		if err := os.WriteFile(spec.CgroupProcs, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			fail("join memory cgroup: %v", err)
		}
	}
	if err := buildRootfs(&spec); err != nil {
		fail("%v", err)
	}
	if err := syscall.Chroot(spec.Rootfs); err != nil {
		fail("chroot: %v", err)
	}
	wd := spec.WorkingDir
	if wd == "" {
		wd = "/"
	}
	if err := os.MkdirAll(wd, 0o755); err != nil {
		fail("create working directory %q: %v", wd, err)
	}
	if u := spec.User; u != nil {
		groups := make([]int, len(u.Groups))
		for i, g := range u.Groups {
			groups[i] = int(g)
		}
		// Go applies these to every thread of the process (not only the calling one).
		if err := syscall.Setgroups(groups); err != nil {
			fail("setgroups: %v", err)
		}
		if err := syscall.Setgid(int(u.GID)); err != nil {
			fail("setgid %d: %v", u.GID, err)
		}
		if err := syscall.Setuid(int(u.UID)); err != nil {
			fail("setuid %d: %v", u.UID, err)
		}
	}
	if err := os.Chdir(wd); err != nil {
		fail("chdir to working directory %q: %v", wd, err)
	}
	if len(spec.Argv) == 0 {
		fail("no command specified")
	}
	path, err := lookPath(spec.Argv[0], spec.Env)
	if err != nil {
		fail("exec: %q: %v", spec.Argv[0], err)
	}
	err = syscall.Exec(path, spec.Argv, spec.Env)
	fail("exec: %q: %v", spec.Argv[0], err)
}

func buildRootfs(spec *shimSpec) error {
	r := spec.Rootfs
	for _, d := range []string{r, spec.Upper, spec.Work, spec.Tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// Anyone may write /tmp, as on a node (MkdirAll's mode is narrowed by the umask).
	if err := os.Chmod(spec.Tmp, 0o1777); err != nil {
		return err
	}
	lower := spec.Lower
	if lower == "" {
		lower = "/"
	}
	if err := syscall.Mount("overlay", r, "overlay", 0,
		fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, spec.Upper, spec.Work)); err != nil {
		return fmt.Errorf("mount root overlay: %w", err)
	}
	// An image need not have its mount points (a distroless one has no /proc): they go to the
	// private upper layer.
	for _, d := range []string{"proc", "sys", "dev", "tmp"} {
		if err := os.MkdirAll(filepath.Join(r, d), 0o755); err != nil {
			return fmt.Errorf("create /%s: %w", d, err)
		}
	}
	if err := syscall.Mount("proc", filepath.Join(r, "proc"), "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	if err := syscall.Mount("/sys", filepath.Join(r, "sys"), "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return fmt.Errorf("mount /sys: %w", err)
	}
	if err := buildDev(filepath.Join(r, "dev")); err != nil {
		return err
	}
	if err := bind(spec.Tmp, filepath.Join(r, "tmp"), false); err != nil {
		return fmt.Errorf("mount /tmp: %w", err)
	}
	// Parents before children, so a volume at /a/b lands inside a volume at /a.
	sort.SliceStable(spec.Mounts, func(i, j int) bool {
		return strings.Count(filepath.Clean(spec.Mounts[i].Target), "/") < strings.Count(filepath.Clean(spec.Mounts[j].Target), "/")
	})
	for _, m := range spec.Mounts {
		// SecureJoin resolves symlinks as if r were the root, so /var/run → /run stays inside.
		target, err := securejoin.SecureJoin(r, m.Target)
		if err != nil {
			return fmt.Errorf("mount %s: %w", m.Target, err)
		}
		if err := bind(m.Source, target, m.ReadOnly); err != nil {
			return fmt.Errorf("mount %s at %s: %w", m.Source, m.Target, err)
		}
	}
	return nil
}

// bind bind-mounts source at target, creating target as a directory or an empty file.
func bind(source, target string, readOnly bool) error {
	st, err := os.Stat(source)
	if err != nil {
		return err
	}
	if st.IsDir() {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		if _, err := os.Stat(target); os.IsNotExist(err) {
			if err := os.WriteFile(target, nil, 0o644); err != nil {
				return err
			}
		}
	}
	if err := syscall.Mount(source, target, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return err
	}
	if readOnly {
		return syscall.Mount("", target, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY|syscall.MS_REC, "")
	}
	return nil
}

// buildDev gives the container a small /dev of its own, as container runtimes do, so that
// files created there (e.g. /dev/termination-log) never reach the host's /dev.
func buildDev(dev string) error {
	if err := syscall.Mount("tmpfs", dev, "tmpfs", syscall.MS_NOSUID, "mode=755,size=65536k"); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	for _, n := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		if err := bind("/dev/"+n, filepath.Join(dev, n), false); err != nil {
			return fmt.Errorf("mount /dev/%s: %w", n, err)
		}
	}
	if err := bind("/dev/pts", filepath.Join(dev, "pts"), false); err != nil {
		return fmt.Errorf("mount /dev/pts: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dev, "shm"), 0o1777); err != nil {
		return err
	}
	if err := syscall.Mount("shm", filepath.Join(dev, "shm"), "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=1777,size=65536k"); err != nil {
		return fmt.Errorf("mount /dev/shm: %w", err)
	}
	for link, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"} {
		if err := os.Symlink(target, filepath.Join(dev, link)); err != nil {
			return err
		}
	}
	return nil
}

// lookPath finds a command in the container's PATH (we are already inside its root).
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		if err := executable(file); err != nil {
			return "", err
		}
		return file, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("executable file not found in $PATH")
}

func executable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("stat %s: no such file or directory", p)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("%s: permission denied", p)
	}
	return nil
}
