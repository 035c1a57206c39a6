package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// memoryLimiter enforces container memory limits. The kernel does it when a cgroup memory
// controller is writable (v2 preferred, else v1); otherwise a watchdog sums the RSS of the
// container's process group every 50ms and SIGKILLs it over the limit. Either way the container
// ends with exit 137 and reason OOMKilled.
type memoryLimiter struct {
	mode string // "cgroup2", "cgroup1" or "watchdog"
	root string // our parent cgroup directory (cgroup modes)
}

func newMemoryLimiter(want, nodeAgentName string) (*memoryLimiter, error) {
	if want == "watchdog" {
		return &memoryLimiter{mode: "watchdog"}, nil
	}
	try := func(mode, base string) *memoryLimiter {
		dir := filepath.Join(base, nodeAgentName)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil
		}
		if mode == "cgroup2" {
			// Children can only use the memory controller if every ancestor delegates it.
			if err := os.WriteFile(filepath.Join(base, "cgroup.subtree_control"), []byte("+memory"), 0o644); err != nil {
				return nil
			}
			if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+memory"), 0o644); err != nil {
				return nil
			}
		}
		return &memoryLimiter{mode: mode, root: dir}
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil && bytes.Contains(b, []byte("memory")) {
		if l := try("cgroup2", "/sys/fs/cgroup"); l != nil {
			return l, nil
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err == nil {
		if l := try("cgroup1", "/sys/fs/cgroup/memory"); l != nil {
			return l, nil
		}
	}
	if want == "cgroup" {
		return nil, fmt.Errorf("memoryEnforcement is cgroup but no writable cgroup memory controller was found")
	}
	return &memoryLimiter{mode: "watchdog"}, nil
}

// containerCgroup is one container attempt's memory cgroup (empty dir in watchdog mode).
type containerCgroup struct {
	l     *memoryLimiter
	dir   string
	limit int64
}

// create makes the cgroup for a container attempt; limit <= 0 means unlimited.
func (l *memoryLimiter) create(name string, limit int64) (*containerCgroup, error) {
	cg := &containerCgroup{l: l, limit: limit}
	if l.mode == "watchdog" {
		return cg, nil
	}
	cg.dir = filepath.Join(l.root, name)
	if err := os.MkdirAll(cg.dir, 0o755); err != nil {
		return nil, err
	}
	if limit > 0 {
		var files map[string]string
		if l.mode == "cgroup2" {
			// oom.group: the whole container dies together, as with a real runtime.
			files = map[string]string{"memory.max": strconv.FormatInt(limit, 10), "memory.swap.max": "0", "memory.oom.group": "1"}
		} else {
			files = map[string]string{"memory.limit_in_bytes": strconv.FormatInt(limit, 10), "memory.memsw.limit_in_bytes": strconv.FormatInt(limit, 10)}
		}
		for f, v := range files {
			if err := os.WriteFile(filepath.Join(cg.dir, f), []byte(v), 0o644); err != nil && !os.IsNotExist(err) && f != "memory.memsw.limit_in_bytes" && f != "memory.swap.max" {
				return nil, fmt.Errorf("set %s: %w", f, err)
			}
		}
	}
	return cg, nil
}

// procsFile is what the shim writes its pid into before exec; empty in watchdog mode.
func (cg *containerCgroup) procsFile() string {
	if cg.dir == "" {
		return ""
	}
	return filepath.Join(cg.dir, "cgroup.procs")
}

// oomKilled reports whether the kernel OOM-killed a process of this cgroup.
func (cg *containerCgroup) oomKilled() bool {
	if cg.dir == "" {
		return false
	}
	file := "memory.events"
	if cg.l.mode == "cgroup1" {
		file = "memory.oom_control"
	}
	b, err := os.ReadFile(filepath.Join(cg.dir, file))
	if err != nil {
		return false
	}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) == 2 && f[0] == "oom_kill" && f[1] != "0" {
			return true
		}
	}
	return false
}

// killAll SIGKILLs every process left in the cgroup.
func (cg *containerCgroup) killAll() {
	if cg.dir == "" {
		return
	}
	if cg.l.mode == "cgroup2" {
		if os.WriteFile(filepath.Join(cg.dir, "cgroup.kill"), []byte("1"), 0o644) == nil {
			return
		}
	}
	for _, pid := range cg.pids() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func (cg *containerCgroup) pids() []int {
	b, _ := os.ReadFile(filepath.Join(cg.dir, "cgroup.procs"))
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

// remove deletes the cgroup once its processes are gone (retrying briefly while they exit).
func (cg *containerCgroup) remove() {
	if cg.dir == "" {
		return
	}
	for i := 0; i < 50; i++ {
		if err := os.Remove(cg.dir); err == nil || os.IsNotExist(err) {
			return
		}
		cg.killAll()
		time.Sleep(20 * time.Millisecond)
	}
}

// watch runs the RSS watchdog for a process group until stop closes; it returns true (on the
// channel) if it killed the group for exceeding the limit.
func (cg *containerCgroup) watch(pgid int, stop <-chan struct{}) <-chan bool {
	out := make(chan bool, 1)
	if cg.dir != "" || cg.limit <= 0 {
		out <- false
		return out
	}
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				out <- false
				return
			case <-t.C:
				if groupRSS(pgid) > cg.limit {
					_ = syscall.Kill(-pgid, syscall.SIGKILL)
					out <- true
					return
				}
			}
		}
	}()
	return out
}

// groupRSS sums the resident memory of every process in a process group.
func groupRSS(pgid int) int64 {
	entries, _ := os.ReadDir("/proc")
	page := int64(os.Getpagesize())
	var total int64
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command: state ppid pgrp ... rss is field 24 overall.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 22 || f[2] != strconv.Itoa(pgid) {
			continue
		}
		rss, _ := strconv.ParseInt(f[21], 10, 64)
		total += rss * page
	}
	return total
}
