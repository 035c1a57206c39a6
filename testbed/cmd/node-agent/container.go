package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

// containerRun is one container of a pod across its restarts.
type containerRun struct {
	w        *podWorker
	spec     corev1.Container
	isInit   bool
	status   corev1.ContainerStatus // guarded by w.mu
	attempts []*attempt             // guarded by w.mu
}

// attempt is one start of the container (restartCount n).
type attempt struct {
	logPath string
	done    chan struct{}
}

func newContainerRun(w *podWorker, c corev1.Container, isInit bool) *containerRun {
	reason := "ContainerCreating"
	if !isInit && len(w.pod.Spec.InitContainers) > 0 {
		reason = "PodInitializing"
	}
	return &containerRun{w: w, spec: c, isInit: isInit, status: corev1.ContainerStatus{
		Name: c.Name, Image: c.Image, Started: ptrTo(false),
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}},
	}}
}

func (c *containerRun) snapshot() corev1.ContainerStatus { return *c.status.DeepCopy() }

func (c *containerRun) setWaiting(reason, msg string) {
	c.w.mu.Lock()
	changed := c.status.State.Waiting == nil || c.status.State.Waiting.Reason != reason || c.status.State.Waiting.Message != msg
	c.status.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
	c.status.Ready, c.status.Started = false, ptrTo(false)
	c.w.mu.Unlock()
	if changed {
		c.w.markDirty()
	}
}

// runToEnd runs the container, restarting it as the pod's restartPolicy says, until it is done
// or the pod is stopped. It returns whether the container's last run succeeded.
func (c *containerRun) runToEnd(volumes map[string]string) bool {
	w, a := c.w, c.w.a
	ctx := w.ctx
	policy := w.pod.Spec.RestartPolicy
	crashBackoff, pullBackoff := 10*time.Second, 10*time.Second
	for {
		if ctx.Err() != nil {
			return false
		}
		img, err := a.pullImage(ctx, w.pod, &c.spec)
		if err != nil {
			var ie *imageError
			if !errors.As(err, &ie) {
				ie = &imageError{"ErrImagePull", err.Error()}
			}
			c.setWaiting(ie.Reason, ie.Message)
			switch ie.Reason {
			case "InvalidImageName":
				a.event(w.pod, corev1.EventTypeWarning, "Failed", ie.Message)
				<-ctx.Done()
				return false
			case "ErrImageNeverPull":
				// The kubelet retries at each pod sync, staying in ErrImageNeverPull.
				a.event(w.pod, corev1.EventTypeWarning, "ErrImageNeverPull", ie.Message)
				if !sleepCtx(ctx, pullBackoff) {
					return false
				}
				pullBackoff = min(pullBackoff*2, 300*time.Second)
				continue
			}
			a.event(w.pod, corev1.EventTypeWarning, "Failed", ie.Message)
			if !sleepCtx(ctx, 2*time.Second) {
				return false
			}
			msg := fmt.Sprintf("Back-off pulling image %q: ErrImagePull: %s", c.spec.Image, ie.Message)
			c.setWaiting("ImagePullBackOff", msg)
			a.event(w.pod, corev1.EventTypeNormal, "BackOff", msg)
			if !sleepCtx(ctx, pullBackoff) {
				return false
			}
			pullBackoff = min(pullBackoff*2, 300*time.Second)
			continue
		}
		run, err := a.containerConfig(ctx, w.pod, &c.spec, img)
		if err != nil {
			var ce *configError
			if errors.As(err, &ce) {
				c.setWaiting("CreateContainerConfigError", ce.msg)
				a.event(w.pod, corev1.EventTypeWarning, "Failed", "Error: "+ce.msg)
			}
			if !sleepCtx(ctx, 2*time.Second) {
				return false
			}
			continue
		}
		exitCode := c.execute(volumes, img, run)
		if ctx.Err() != nil {
			return false
		}
		success := exitCode == 0
		restart := policy == corev1.RestartPolicyAlways || (policy == corev1.RestartPolicyOnFailure && !success)
		if !restart || (c.isInit && success) {
			return success
		}
		w.mu.Lock()
		c.status.RestartCount++
		c.status.LastTerminationState = c.status.State
		w.mu.Unlock()
		c.setWaiting("CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", crashBackoff, c.spec.Name, w.name, w.ns, w.uid))
		if !sleepCtx(ctx, crashBackoff) {
			return false
		}
		crashBackoff = min(crashBackoff*2, 300*time.Second)
	}
}

// execute runs one attempt to its end and records its terminated state; returns the exit code.
func (c *containerRun) execute(volumes map[string]string, img *image, run *runConfig) int32 {
	w, a := c.w, c.w.a
	w.mu.Lock()
	n := int(c.status.RestartCount)
	w.mu.Unlock()
	dir := filepath.Join(w.dir, "containers", c.spec.Name, strconv.Itoa(n))
	logPath := filepath.Join(w.dir, "logs", c.spec.Name, strconv.Itoa(n)+".log")
	fail := func(reason, msg string) int32 {
		now := metav1.Now()
		w.mu.Lock()
		c.status.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 128, Reason: reason, Message: msg, StartedAt: now, FinishedAt: now}}
		w.mu.Unlock()
		w.markDirty()
		return 128
	}
	for _, d := range []string{dir, filepath.Dir(logPath)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fail("StartError", err.Error())
		}
	}
	termLog := filepath.Join(dir, "termination-log")
	// Writable by whichever user the container runs as (chmod: the umask would narrow 0666).
	if err := os.WriteFile(termLog, nil, 0o666); err != nil {
		return fail("StartError", err.Error())
	}
	if err := os.Chmod(termLog, 0o666); err != nil {
		return fail("StartError", err.Error())
	}
	spec := shimSpec{
		Lower:  "/",
		Rootfs: filepath.Join(dir, "rootfs"), Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work"),
		Tmp: filepath.Join(dir, "tmp"), Env: run.env, StartErrorFile: filepath.Join(dir, "start-error"),
		WorkingDir: c.spec.WorkingDir,
	}
	if img.Rootfs != "" {
		spec.Lower = img.Rootfs
		// The host's name resolution, as the kubelet gives every container /etc/hosts and
		// /etc/resolv.conf (the pod shares the host's network here).
		for _, f := range []string{"/etc/hosts", "/etc/resolv.conf"} {
			if _, err := os.Stat(f); err == nil {
				spec.Mounts = append(spec.Mounts, shimMount{Source: f, Target: f, ReadOnly: true})
			}
		}
	}
	if u := run.user; u != nil {
		spec.User = &shimUser{UID: u.UID, GID: u.GID, Groups: u.Groups}
	}
	if spec.WorkingDir == "" {
		spec.WorkingDir = img.WorkingDir
	}
	for _, m := range img.Mounts {
		spec.Mounts = append(spec.Mounts, shimMount{Source: m.HostPath, Target: m.Path, ReadOnly: m.ReadOnly})
	}
	for _, vm := range c.spec.VolumeMounts {
		src, ok := volumes[vm.Name]
		if !ok {
			return fail("CreateContainerError", fmt.Sprintf("volume %q not found", vm.Name))
		}
		if vm.SubPath != "" {
			src = filepath.Join(src, filepath.Clean("/"+vm.SubPath))
			if _, err := os.Stat(src); os.IsNotExist(err) {
				_ = os.MkdirAll(src, 0o777)
				_ = os.Chmod(src, 0o777)
			}
		}
		spec.Mounts = append(spec.Mounts, shimMount{Source: src, Target: vm.MountPath, ReadOnly: vm.ReadOnly})
	}
	tmp := c.spec.TerminationMessagePath
	if tmp == "" {
		tmp = corev1.TerminationMessagePathDefault
	}
	spec.Mounts = append(spec.Mounts, shimMount{Source: termLog, Target: tmp})
	spec.Argv = c.argv(img, run.vars)

	var limit int64
	if q, ok := c.spec.Resources.Limits[corev1.ResourceMemory]; ok {
		limit = q.Value()
	}
	cg, err := a.memory.create(fmt.Sprintf("%s_%s_%d", w.uid, c.spec.Name, n), limit)
	if err != nil {
		return fail("StartError", "create memory cgroup: "+err.Error())
	}
	defer cg.remove()
	spec.CgroupProcs = cg.procsFile()
	specPath := filepath.Join(dir, "spec.json")
	raw, _ := json.Marshal(spec)
	if err := os.WriteFile(specPath, raw, 0o600); err != nil {
		return fail("StartError", err.Error())
	}

	logs, err := newLogWriter(logPath)
	if err != nil {
		return fail("StartError", err.Error())
	}
	defer logs.close()
	cmd := exec.Command(a.self, shimArg, specPath)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	// Own process group (signals reach the whole container), own mount namespace (Go makes
	// it private), killed by the kernel if the agent dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	// Our own pipes, not cmd.StdoutPipe: Wait closes those as soon as the process exits, and
	// output still buffered in the pipe (often the last lines, under load) would be lost.
	stdout, stdoutW, err := os.Pipe()
	if err != nil {
		return fail("StartError", err.Error())
	}
	defer stdout.Close()
	stderr, stderrW, err := os.Pipe()
	if err != nil {
		stdoutW.Close()
		return fail("StartError", err.Error())
	}
	defer stderr.Close()
	cmd.Stdout, cmd.Stderr = stdoutW, stderrW
	at := &attempt{logPath: logPath, done: make(chan struct{})}
	defer close(at.done)
	err = cmd.Start()
	// The child has its copies; ours must go so that the readers see EOF when it is done.
	stdoutW.Close()
	stderrW.Close()
	if err != nil {
		return fail("StartError", err.Error())
	}
	pid := cmd.Process.Pid
	a.trackPid(pid, true)
	defer a.trackPid(pid, false)
	started := metav1.Now()
	var copying sync.WaitGroup
	copying.Add(2)
	go func() { defer copying.Done(); logs.copyStream("stdout", stdout) }()
	go func() { defer copying.Done(); logs.copyStream("stderr", stderr) }()
	containerID := fmt.Sprintf("testbed://%s-%s-%d", w.uid, c.spec.Name, n)
	w.mu.Lock()
	c.attempts = append(c.attempts, at)
	c.status.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}}
	c.status.Ready, c.status.Started = !c.isInit, ptrTo(true)
	c.status.ContainerID, c.status.ImageID = containerID, img.ID
	w.mu.Unlock()
	w.markDirty()

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	watchStop := make(chan struct{})
	watchdog := cg.watch(pid, watchStop)
	var waitErr error
	select {
	case waitErr = <-exited:
	case <-w.ctx.Done():
		grace := w.stopGrace()
		a.event(w.pod, corev1.EventTypeNormal, "Killing", fmt.Sprintf("Stopping container %s", c.spec.Name))
		if grace > 0 {
			_ = syscall.Kill(-pid, syscall.SIGTERM)
		}
		select {
		case waitErr = <-exited:
		case <-time.After(grace):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			cg.killAll()
			waitErr = <-exited
		}
	}
	close(watchStop)
	watchdogKilled := <-watchdog
	// Whatever the main process left behind dies with it, as in a container.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	cg.killAll()
	// Every line must be in the log file before the container counts as terminated (readers
	// take the terminated state as "the log is complete"). The process group is dead, so EOF
	// comes as soon as the copiers have drained the pipes; the bound only guards against a
	// descendant that escaped the group.
	copied := make(chan struct{})
	go func() { copying.Wait(); close(copied) }()
	select {
	case <-copied:
	case <-time.After(30 * time.Second):
	}
	finished := metav1.Now()

	exitCode := int32(0)
	if st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		switch {
		case st.Signaled():
			exitCode = 128 + int32(st.Signal())
		default:
			exitCode = int32(st.ExitStatus())
		}
	} else if waitErr != nil {
		exitCode = 1
	}
	term := &corev1.ContainerStateTerminated{ExitCode: exitCode, StartedAt: started, FinishedAt: finished, ContainerID: containerID}
	if st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && st.Signaled() {
		term.Signal = int32(st.Signal())
	}
	startErr, _ := os.ReadFile(spec.StartErrorFile)
	switch {
	case exitCode == 128 && len(startErr) > 0:
		term.Reason, term.Message = "StartError", string(startErr)
	case watchdogKilled || cg.oomKilled():
		term.Reason = "OOMKilled"
		if exitCode == 0 && watchdogKilled {
			term.ExitCode = 137
		}
	case exitCode == 0:
		term.Reason = "Completed"
	default:
		term.Reason = "Error"
	}
	if term.Message == "" {
		term.Message = terminationMessage(termLog, logPath, c.spec.TerminationMessagePolicy, term.ExitCode)
	}
	w.mu.Lock()
	c.status.State = corev1.ContainerState{Terminated: term}
	c.status.Ready, c.status.Started = false, ptrTo(false)
	w.mu.Unlock()
	w.markDirty()
	w.logger().Info("container exited", "container", c.spec.Name, "exitCode", term.ExitCode, "reason", term.Reason)
	return term.ExitCode
}

// argv applies Kubernetes' rules to the image's Entrypoint and Cmd: command replaces the
// Entrypoint and drops the Cmd, args replace the Cmd; $(VAR) in command and args expands from
// vars (the image's own Entrypoint and Cmd are not expanded). A host mapping's command is a Cmd.
func (c *containerRun) argv(img *image, vars map[string]string) []string {
	return containerArgv(img.Entrypoint, img.Cmd, c.spec.Command, c.spec.Args, vars)
}

func containerArgv(entrypoint, cmd, command, args []string, vars map[string]string) []string {
	expand := func(in []string) []string {
		out := make([]string, len(in))
		for i, s := range in {
			out[i] = expansion.Expand(s, expansion.MappingFuncFor(vars))
		}
		return out
	}
	switch {
	case len(command) > 0:
		return append(expand(command), expand(args)...)
	case len(args) > 0:
		return append(append([]string{}, entrypoint...), expand(args)...)
	default:
		return append(append([]string{}, entrypoint...), cmd...)
	}
}

// terminationMessage: the file's last 4096 bytes; with FallbackToLogsOnError and a failure and
// an empty file, the log's last 80 lines, at most 2048 bytes.
func terminationMessage(termLog, logPath string, policy corev1.TerminationMessagePolicy, exitCode int32) string {
	b, _ := os.ReadFile(termLog)
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	if len(b) > 0 || policy != corev1.TerminationMessageFallbackToLogsOnError || exitCode == 0 {
		return string(b)
	}
	raw, err := os.ReadFile(logPath)
	if err != nil {
		return ""
	}
	var lines []string
	var cur []byte
	for _, rec := range strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n") {
		_, _, partial, content, err := parseRecord([]byte(rec))
		if err != nil {
			continue
		}
		cur = append(cur, content...)
		if !partial {
			lines = append(lines, string(cur))
			cur = nil
		}
	}
	if len(lines) > 80 {
		lines = lines[len(lines)-80:]
	}
	msg := strings.Join(lines, "\n")
	if len(lines) > 0 {
		msg += "\n"
	}
	if len(msg) > 2048 {
		msg = msg[len(msg)-2048:]
	}
	return msg
}
