package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	resourcehelper "k8s.io/component-helpers/resource"
	schedcorev1 "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"
)

// scheduler binds pending pods to our nodes, with the default scheduler's main filters:
// unschedulable nodes, taints/tolerations, nodeSelector/required node affinity, pod count and
// resource requests (including extended resources such as nvidia.com/gpu). Pods that fit
// nowhere get PodScheduled=False/Unschedulable and a message shaped like the scheduler's.
type scheduler struct {
	a       *agent
	trigger chan struct{}
	mu      sync.Mutex
	assumed map[types.UID]string // bound by us, not yet seen bound in the informer cache
}

func newScheduler(a *agent) *scheduler {
	return &scheduler{a: a, trigger: make(chan struct{}, 1), assumed: map[types.UID]string{}}
}

func (s *scheduler) kick() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

func (s *scheduler) run(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.trigger:
		case <-t.C:
		}
		s.scheduleAll(ctx)
	}
}

func isTerminal(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func (s *scheduler) scheduleAll(ctx context.Context) {
	pods, err := s.a.podLister.List(labels.Everything())
	if err != nil {
		return
	}
	nodes := s.a.liveNodes()
	used := map[string]corev1.ResourceList{}
	count := map[string]int64{}
	add := func(node string, p *corev1.Pod) {
		if used[node] == nil {
			used[node] = corev1.ResourceList{}
		}
		for k, v := range resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{}) {
			q := used[node][k]
			q.Add(v)
			used[node][k] = q
		}
		count[node]++
	}
	var pending []*corev1.Pod
	seen := map[types.UID]bool{}
	for _, p := range pods {
		seen[p.UID] = true
		switch {
		case p.Spec.NodeName != "":
			s.mu.Lock()
			delete(s.assumed, p.UID)
			s.mu.Unlock()
			if !isTerminal(p) {
				add(p.Spec.NodeName, p)
			}
		case p.DeletionTimestamp == nil && !isTerminal(p) &&
			(p.Spec.SchedulerName == "" || p.Spec.SchedulerName == corev1.DefaultSchedulerName):
			pending = append(pending, p)
		}
	}
	s.mu.Lock()
	var todo []*corev1.Pod
	for _, p := range pending {
		if node, ok := s.assumed[p.UID]; ok {
			add(node, p)
		} else {
			todo = append(todo, p)
		}
	}
	for uid := range s.assumed {
		if !seen[uid] {
			delete(s.assumed, uid)
		}
	}
	s.mu.Unlock()
	// Higher priority first, then oldest first.
	sort.SliceStable(todo, func(i, j int) bool {
		pi, pj := schedcorev1.PodPriority(todo[i]), schedcorev1.PodPriority(todo[j])
		if pi != pj {
			return pi > pj
		}
		return todo[i].CreationTimestamp.Before(&todo[j].CreationTimestamp)
	})
	for _, p := range todo {
		reasons := map[string]int{}
		bound := false
		for _, n := range nodes {
			why := fits(p, n, used[n.Name], count[n.Name])
			if len(why) == 0 {
				if err := s.bind(ctx, p, n.Name); err != nil {
					klog.Background().Info("binding failed", "pod", klog.KObj(p), "node", n.Name, "err", err)
				} else {
					s.mu.Lock()
					s.assumed[p.UID] = n.Name
					s.mu.Unlock()
					add(n.Name, p)
				}
				bound = true
				break
			}
			for _, r := range why {
				reasons[r]++
			}
		}
		if !bound {
			s.markUnschedulable(ctx, p, unschedulableMessage(len(nodes), reasons))
		}
	}
}

// unschedulableMessage formats reasons as the scheduler does: "0/2 nodes are available:
// 1 Insufficient memory, 1 node(s) had untolerated taint {nvidia.com/gpu: present}."
func unschedulableMessage(nodes int, reasons map[string]int) string {
	if nodes == 0 {
		return "no nodes available to schedule pods"
	}
	var parts []string
	for r, n := range reasons {
		parts = append(parts, fmt.Sprintf("%d %s", n, r))
	}
	sort.Strings(parts)
	sort.SliceStable(parts, func(i, j int) bool {
		return strings.SplitN(parts[i], " ", 2)[1] < strings.SplitN(parts[j], " ", 2)[1]
	})
	return fmt.Sprintf("0/%d nodes are available: %s.", nodes, strings.Join(parts, ", "))
}

// fits returns why pod does not fit node (nil if it does), in the scheduler's words.
func fits(p *corev1.Pod, n *corev1.Node, used corev1.ResourceList, pods int64) []string {
	if n.Spec.Unschedulable {
		return []string{"node(s) were unschedulable"}
	}
	if taint, bad := schedcorev1.FindMatchingUntoleratedTaint(klog.Background(), n.Spec.Taints, p.Spec.Tolerations,
		func(t *corev1.Taint) bool {
			return t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute
		}, false); bad {
		return []string{fmt.Sprintf("node(s) had untolerated taint {%s: %s}", taint.Key, taint.Value)}
	}
	if ok, _ := nodeaffinity.GetRequiredNodeAffinity(p).Match(n); !ok {
		return []string{"node(s) didn't match Pod's node affinity/selector"}
	}
	var why []string
	alloc := n.Status.Allocatable
	if max, ok := alloc[corev1.ResourcePods]; ok && pods+1 > max.Value() {
		why = append(why, "Too many pods")
	}
	req := resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{})
	names := make([]string, 0, len(req))
	for k := range req {
		names = append(names, string(k))
	}
	sort.Strings(names)
	for _, name := range names {
		r := corev1.ResourceName(name)
		want := req[r]
		if want.IsZero() || r == corev1.ResourcePods {
			continue
		}
		free := alloc[r].DeepCopy()
		if u, ok := used[r]; ok {
			free.Sub(u)
		}
		if want.Cmp(free) > 0 || free.Cmp(resource.Quantity{}) < 0 {
			why = append(why, "Insufficient "+name)
		}
	}
	return why
}

func (s *scheduler) bind(ctx context.Context, p *corev1.Pod, node string) error {
	err := s.a.client.CoreV1().Pods(p.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, UID: p.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}, metav1.CreateOptions{})
	if err == nil {
		s.a.event(p, corev1.EventTypeNormal, "Scheduled", fmt.Sprintf("Successfully assigned %s/%s to %s", p.Namespace, p.Name, node))
	}
	return err
}

func (s *scheduler) markUnschedulable(ctx context.Context, p *corev1.Pod, msg string) {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable && c.Message == msg {
			return
		}
	}
	latest := p.DeepCopy()
	found := false
	for i := range latest.Status.Conditions {
		if latest.Status.Conditions[i].Type == corev1.PodScheduled {
			latest.Status.Conditions[i] = corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
				Reason: corev1.PodReasonUnschedulable, Message: msg, LastTransitionTime: metav1.Now(), LastProbeTime: metav1.Now()}
			found = true
		}
	}
	if !found {
		latest.Status.Conditions = append(latest.Status.Conditions, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
			Reason: corev1.PodReasonUnschedulable, Message: msg, LastTransitionTime: metav1.Now()})
	}
	if _, err := s.a.client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, latest, metav1.UpdateOptions{}); err != nil {
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			klog.Background().Info("marking pod unschedulable failed", "pod", klog.KObj(p), "err", err)
		}
		return
	}
	s.a.event(p, corev1.EventTypeWarning, "FailedScheduling", msg)
}
