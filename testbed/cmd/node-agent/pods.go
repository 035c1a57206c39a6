package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// podManager owns one podWorker per pod bound to one of our nodes.
type podManager struct {
	a       *agent
	mu      sync.Mutex
	workers map[types.UID]*podWorker
}

func (m *podManager) byName(ns, name string) *podWorker {
	m.mu.Lock()
	defer m.mu.Unlock()
	var found *podWorker
	for _, w := range m.workers {
		if w.ns == ns && w.name == name && (found == nil || w.created.After(found.created)) {
			found = w
		}
	}
	return found
}

func (m *podManager) onNode(node string) []*podWorker {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*podWorker
	for _, w := range m.workers {
		if w.node == node {
			out = append(out, w)
		}
	}
	return out
}

// observe is called for every add/update of a pod bound to one of our (live) nodes.
func (m *podManager) observe(pod *corev1.Pod) {
	m.mu.Lock()
	w, ok := m.workers[pod.UID]
	if !ok {
		terminal := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
		if terminal {
			// Finished before this agent (re)started: only its deletion needs confirming.
			m.mu.Unlock()
			if pod.DeletionTimestamp != nil {
				go m.a.confirmDeletion(pod.Namespace, pod.Name, pod.UID)
			}
			return
		}
		w = newPodWorker(m.a, pod)
		m.workers[pod.UID] = w
		m.mu.Unlock()
		w.update(pod) // a pod first seen already being deleted must not start
		go w.run()
		return
	}
	m.mu.Unlock()
	w.update(pod)
}

// forget is called when a pod disappeared from the API (or its node was lost).
func (m *podManager) forget(uid types.UID, silently bool) {
	m.mu.Lock()
	w, ok := m.workers[uid]
	delete(m.workers, uid)
	m.mu.Unlock()
	if ok {
		w.abandon(silently)
	}
}

func (m *podManager) all() []*podWorker {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*podWorker, 0, len(m.workers))
	for _, w := range m.workers {
		out = append(out, w)
	}
	return out
}

// podWorker runs one pod: volumes, init containers, containers, status, deletion.
type podWorker struct {
	a                   *agent
	uid                 types.UID
	ns, name, node, dir string
	created             time.Time

	mu        sync.Mutex
	pod       *corev1.Pod
	init      []*containerRun
	main      []*containerRun
	phase     corev1.PodPhase
	reason    string // pod-level reason/message (DeadlineExceeded)
	message   string
	startTime metav1.Time
	sandbox   bool // volumes ready (PodReadyToStartContainers)
	initDone  bool

	ctx         context.Context    // cancelled to stop the containers (deletion, deadline, loss)
	stop        context.CancelFunc //
	grace       time.Duration      // grace period for that stop
	deleting    bool
	done        bool          // terminal status written
	silent      bool          // node lost / pod gone: no more API writes
	finished    chan struct{} // closed when run returns
	dirty       chan struct{}
	writeMu     sync.Mutex // serialises status writes; guards lastWritten
	lastWritten *corev1.Pod
	conflicted  bool // a write failed: read the pod from the API before the next one
}

func newPodWorker(a *agent, pod *corev1.Pod) *podWorker {
	ctx, cancel := context.WithCancel(a.ctx)
	w := &podWorker{
		a: a, uid: pod.UID, ns: pod.Namespace, name: pod.Name, node: pod.Spec.NodeName,
		dir: filepath.Join(a.stateDir, "pods", string(pod.UID)), created: time.Now(),
		pod: pod.DeepCopy(), phase: corev1.PodPending, startTime: metav1.Now(),
		ctx: ctx, stop: cancel, finished: make(chan struct{}), dirty: make(chan struct{}, 1),
	}
	for _, c := range pod.Spec.InitContainers {
		w.init = append(w.init, newContainerRun(w, c, true))
	}
	for _, c := range pod.Spec.Containers {
		w.main = append(w.main, newContainerRun(w, c, false))
	}
	w.initDone = len(w.init) == 0
	go w.statusLoop()
	return w
}

func (w *podWorker) logger() klog.Logger {
	return klog.Background().WithValues("pod", w.ns+"/"+w.name, "uid", w.uid)
}

// update receives a newer version of the pod.
func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	w.pod = pod.DeepCopy()
	startDelete := pod.DeletionTimestamp != nil && !w.deleting
	if startDelete {
		w.deleting = true
		w.grace = 30 * time.Second
		if pod.DeletionGracePeriodSeconds != nil {
			w.grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
		}
	}
	done, silent := w.done, w.silent
	w.mu.Unlock()
	switch {
	case !startDelete || silent:
	case done:
		// Already terminal and written: confirm the deletion.
		go w.a.confirmDeletion(w.ns, w.name, w.uid)
	default:
		w.logger().Info("pod deleted: stopping containers", "grace", w.grace)
		w.stop()
	}
}

// abandon stops everything at once: the pod is gone from the API, or its node was lost.
func (w *podWorker) abandon(silently bool) {
	w.mu.Lock()
	w.silent = true
	w.grace = 0
	w.mu.Unlock()
	w.stop()
	go func() {
		<-w.finished
		if !silently {
			_ = os.RemoveAll(w.dir)
		}
	}()
}

func (w *podWorker) isSilent() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.silent
}

func (w *podWorker) markDirty() {
	select {
	case w.dirty <- struct{}{}:
	default:
	}
}

// run is the pod's lifecycle.
func (w *podWorker) run() {
	defer close(w.finished)
	log := w.logger()
	w.mu.Lock()
	restarted := podWasStarted(w.pod)
	w.mu.Unlock()
	if restarted {
		// This agent restarted: the processes of this pod died with the previous one.
		w.failLostContainers()
		w.finish()
		return
	}
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		log.Error(err, "create pod directory")
	}
	w.markDirty()

	if d := w.pod.Spec.ActiveDeadlineSeconds; d != nil {
		deadline := time.Duration(*d) * time.Second
		t := time.AfterFunc(deadline, func() {
			w.mu.Lock()
			if w.phase == corev1.PodPending || w.phase == corev1.PodRunning {
				w.reason, w.message = "DeadlineExceeded", fmt.Sprintf("Pod was active on the node longer than the specified deadline")
				w.grace = podGrace(w.pod)
			}
			w.mu.Unlock()
			w.stop()
		})
		defer t.Stop()
	}

	// Volumes (retried until they can be set up, as the kubelet does).
	var volumes map[string]string
	for {
		var err error
		volumes, err = w.a.prepareVolumes(w.ctx, w.pod, w.dir)
		if err == nil {
			break
		}
		w.a.event(w.pod, corev1.EventTypeWarning, "FailedMount", err.Error())
		if !sleepCtx(w.ctx, 2*time.Second) {
			w.finish()
			return
		}
	}
	w.mu.Lock()
	w.sandbox = true
	w.mu.Unlock()
	w.markDirty()

	for _, c := range w.init {
		if !c.runToEnd(volumes) || w.ctx.Err() != nil {
			w.finish()
			return
		}
	}
	w.mu.Lock()
	w.initDone = true
	w.mu.Unlock()
	w.markDirty()

	var wg sync.WaitGroup
	for _, c := range w.main {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.runToEnd(volumes)
		}()
	}
	wg.Wait()
	w.finish()
}

// finish settles the pod's terminal phase, writes it, and confirms a deletion if one is pending.
func (w *podWorker) finish() {
	w.mu.Lock()
	allSucceeded := len(w.main) > 0
	for _, c := range w.main {
		t := c.status.State.Terminated
		if t == nil || t.ExitCode != 0 {
			allSucceeded = false
		}
	}
	if w.reason == "DeadlineExceeded" || !allSucceeded {
		w.phase = corev1.PodFailed
	} else {
		w.phase = corev1.PodSucceeded
	}
	w.mu.Unlock()
	if w.isSilent() {
		return
	}
	w.writeStatusUntilDone()
	// A deletion requested before this point is confirmed here, a later one by update: as the
	// kubelet does, delete with grace 0 and a UID precondition once the status is terminal.
	w.mu.Lock()
	w.done = true
	deleting, silent, phase := w.deleting, w.silent, w.phase
	w.mu.Unlock()
	w.logger().Info("pod finished", "phase", phase)
	if deleting && !silent {
		w.a.confirmDeletion(w.ns, w.name, w.uid)
	}
}

// failLostContainers marks the containers of a pod this agent lost track of (agent restart).
func (w *podWorker) failLostContainers() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sandbox, w.initDone = true, true
	for _, list := range [][]*containerRun{w.init, w.main} {
		for _, c := range list {
			prev := findStatus(w.pod, c.spec.Name, c.isInit)
			if prev != nil {
				c.status = *prev
			}
			if c.status.State.Terminated == nil {
				c.status.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: 137, Reason: "ContainerStatusUnknown", FinishedAt: metav1.Now(),
					Message: "The container could not be located when the pod was terminated",
				}}
				c.status.Ready, c.status.Started = false, ptrTo(false)
			}
		}
	}
	if w.pod.Status.StartTime != nil {
		w.startTime = *w.pod.Status.StartTime
	}
}

func podWasStarted(pod *corev1.Pod) bool {
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
		for _, s := range list {
			if s.State.Running != nil || s.State.Terminated != nil {
				return true
			}
		}
	}
	return false
}

func findStatus(pod *corev1.Pod, name string, init bool) *corev1.ContainerStatus {
	list := pod.Status.ContainerStatuses
	if init {
		list = pod.Status.InitContainerStatuses
	}
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	return nil
}

func podGrace(pod *corev1.Pod) time.Duration {
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}

func (w *podWorker) stopGrace() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.grace
}

// logFor returns the log file for the log endpoint, and whether it may still grow.
func (w *podWorker) logFor(container string, previous bool) (string, func() bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var c *containerRun
	for _, x := range append(append([]*containerRun{}, w.init...), w.main...) {
		if x.spec.Name == container {
			c = x
		}
	}
	if c == nil {
		return "", nil, fmt.Errorf("container %q not found in pod %q", container, w.name)
	}
	n := len(c.attempts)
	if previous {
		if n < 2 {
			return "", nil, fmt.Errorf("previous terminated container %q in pod %q not found", container, w.name)
		}
		return c.attempts[n-2].logPath, func() bool { return false }, nil
	}
	if n == 0 {
		reason := "ContainerCreating"
		if c.status.State.Waiting != nil && c.status.State.Waiting.Reason != "" {
			reason = c.status.State.Waiting.Reason
		}
		return "", nil, fmt.Errorf("container %q in pod %q is waiting to start: %s", container, w.name, reason)
	}
	at := c.attempts[n-1]
	return at.logPath, func() bool {
		select {
		case <-at.done:
			return false
		default:
			return true
		}
	}, nil
}

// statusLoop writes the pod's status whenever it changes, until the worker is finished.
func (w *podWorker) statusLoop() {
	for {
		select {
		case <-w.dirty:
			if w.isSilent() {
				continue
			}
			// Transitions come in bursts (sandbox ready, init done, container started): let a
			// burst settle into one write, as the kubelet's status manager batches them.
			time.Sleep(20 * time.Millisecond)
			select {
			case <-w.dirty:
			default:
			}
			w.writeStatusUntilDone()
		case <-w.finished:
			return
		case <-w.a.ctx.Done():
			return
		}
	}
}

// writeStatusUntilDone writes the current status, retrying through conflicts and apiserver
// outages; it gives up only when the pod is gone.
func (w *podWorker) writeStatusUntilDone() {
	w.writeMu.Lock()
	defer w.writeMu.Unlock()
	backoff := 100 * time.Millisecond
	for {
		if w.isSilent() || w.a.ctx.Err() != nil {
			return
		}
		err := w.writeStatus()
		if err == nil || apierrors.IsNotFound(err) {
			return
		}
		if !apierrors.IsConflict(err) {
			w.logger().V(1).Info("status update failed, retrying", "err", err)
			time.Sleep(backoff)
			backoff = min(backoff*2, 2*time.Second)
		}
	}
}

// writeStatus updates pods/status on top of the copy our last write returned; when someone else
// changed the pod since (a conflict), it reads the pod afresh and the next attempt uses that.
func (w *podWorker) writeStatus() error {
	ctx, cancel := context.WithTimeout(w.a.ctx, 10*time.Second)
	defer cancel()
	base := w.lastWritten
	if base == nil && !w.conflicted {
		// First write: the copy the informer delivered is current enough (a conflict says not).
		w.mu.Lock()
		base = w.pod.DeepCopy()
		w.mu.Unlock()
	}
	if base == nil {
		latest, err := w.a.client.CoreV1().Pods(w.ns).Get(ctx, w.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if latest.UID != w.uid {
			return apierrors.NewNotFound(corev1.Resource("pods"), w.name)
		}
		base = latest
	}
	pod := base.DeepCopy()
	w.mu.Lock()
	pod.Status = w.buildStatus(pod.Status)
	w.mu.Unlock()
	if w.lastWritten != nil && equality.Semantic.DeepEqual(pod.Status, w.lastWritten.Status) {
		return nil // nothing new since our last write
	}
	written, err := w.a.client.CoreV1().Pods(w.ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if err != nil {
		w.lastWritten = nil
		w.conflicted = true
		return err
	}
	w.lastWritten = written
	return nil
}

// buildStatus computes the pod status from the worker's state, keeping what others own
// (qosClass, conditions set by controllers such as DisruptionTarget).
func (w *podWorker) buildStatus(old corev1.PodStatus) corev1.PodStatus {
	s := *old.DeepCopy()
	s.Phase = w.phase
	if s.Phase == corev1.PodPending && w.initDone {
		// Running once a container has started, as the kubelet reports it.
		for _, c := range w.main {
			if c.status.State.Waiting == nil || len(c.attempts) > 0 {
				s.Phase = corev1.PodRunning
			}
		}
	}
	s.Reason, s.Message = w.reason, w.message
	s.HostIP, s.PodIP = "127.0.0.1", "127.0.0.1"
	s.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
	s.PodIPs = []corev1.PodIP{{IP: "127.0.0.1"}}
	st := w.startTime
	s.StartTime = &st
	s.InitContainerStatuses, s.ContainerStatuses = nil, nil
	for _, c := range w.init {
		s.InitContainerStatuses = append(s.InitContainerStatuses, c.snapshot())
	}
	allReady, terminal := true, w.phase == corev1.PodSucceeded || w.phase == corev1.PodFailed
	var unready []string
	for _, c := range w.main {
		cs := c.snapshot()
		s.ContainerStatuses = append(s.ContainerStatuses, cs)
		if !cs.Ready {
			allReady = false
			unready = append(unready, c.spec.Name)
		}
	}
	cond := func(t corev1.PodConditionType, ok bool, reason, msg string) {
		status := corev1.ConditionFalse
		if ok {
			status, reason, msg = corev1.ConditionTrue, "", ""
		}
		setCondition(&s, corev1.PodCondition{Type: t, Status: status, Reason: reason, Message: msg})
	}
	cond(corev1.PodReadyToStartContainers, w.sandbox && !terminal, "", "")
	initReason, initMsg := "", ""
	if !w.initDone {
		initReason = "ContainersNotInitialized"
		var names []string
		for _, c := range w.init {
			if c.status.State.Terminated == nil || c.status.State.Terminated.ExitCode != 0 {
				names = append(names, c.spec.Name)
			}
		}
		initMsg = fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(names, " "))
	}
	cond(corev1.PodInitialized, w.initDone, initReason, initMsg)
	readyReason, readyMsg := "ContainersNotReady", fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))
	if terminal {
		readyReason, readyMsg = "PodCompleted", ""
	}
	cond(corev1.ContainersReady, allReady && !terminal, readyReason, readyMsg)
	cond(corev1.PodReady, allReady && !terminal, readyReason, readyMsg)
	sort.SliceStable(s.Conditions, func(i, j int) bool { return condOrder(s.Conditions[i].Type) < condOrder(s.Conditions[j].Type) })
	return s
}

func condOrder(t corev1.PodConditionType) int {
	for i, x := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled} {
		if x == t {
			return i
		}
	}
	return 10
}

// setCondition replaces a condition, keeping its transition time when the status is unchanged.
func setCondition(s *corev1.PodStatus, c corev1.PodCondition) {
	now := metav1.Now()
	for i := range s.Conditions {
		if s.Conditions[i].Type == c.Type {
			if s.Conditions[i].Status == c.Status {
				c.LastTransitionTime = s.Conditions[i].LastTransitionTime
			} else {
				c.LastTransitionTime = now
			}
			c.LastProbeTime = s.Conditions[i].LastProbeTime
			s.Conditions[i] = c
			return
		}
	}
	c.LastTransitionTime = now
	s.Conditions = append(s.Conditions, c)
}

// confirmDeletion removes a terminated pod from the API: grace period 0, guarded by its UID so a
// newer pod with the same name is never touched.
func (a *agent) confirmDeletion(ns, name string, uid types.UID) {
	backoff := 100 * time.Millisecond
	for a.ctx.Err() == nil {
		zero := int64(0)
		err := a.client.CoreV1().Pods(ns).Delete(a.ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid},
		})
		if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return
		}
		time.Sleep(backoff)
		backoff = min(backoff*2, 2*time.Second)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func ptrTo[T any](v T) *T { return &v }
