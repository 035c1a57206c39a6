package main

import (
	"context"
	"runtime"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
)

const heartbeatPeriod = 20 * time.Second

// nodeObject is the Node as registered: labels, taints, capacity from the config.
func (a *agent) nodeObject(nc NodeConfig) *corev1.Node {
	labels := map[string]string{
		"kubernetes.io/hostname": nc.Name, "kubernetes.io/os": "linux", "kubernetes.io/arch": runtime.GOARCH,
		"node.kubernetes.io/instance-type": "flext-testbed",
	}
	for k, v := range nc.Labels {
		labels[k] = v
	}
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: nc.Name, Labels: labels},
		Spec:       corev1.NodeSpec{Taints: nc.Taints},
	}
	n.Status = a.nodeStatus(nc)
	return n
}

func (a *agent) nodeStatus(nc NodeConfig) corev1.NodeStatus {
	now := metav1.Now()
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: a.started}
	}
	return corev1.NodeStatus{
		Capacity:    nc.Capacity.DeepCopy(),
		Allocatable: nc.Capacity.DeepCopy(),
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
			cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"),
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: nc.Name},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(a.port)}},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID: nc.Name, SystemUUID: nc.Name, BootID: a.bootID,
			KernelVersion: "host", OSImage: "flext test bed", ContainerRuntimeVersion: "flext-testbed://1",
			KubeletVersion: a.k8sVersion, OperatingSystem: "linux", Architecture: runtime.GOARCH,
		},
	}
}

// registerNode creates (or refreshes) the Node and keeps its Ready heartbeat until ctx ends.
func (a *agent) registerNode(ctx context.Context, nc NodeConfig) {
	log := klog.Background().WithValues("node", nc.Name)
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := a.upsertNode(ctx, nc)
		if err == nil {
			log.Info("node registered and Ready")
			break
		}
		log.Info("registering node failed, retrying", "err", err)
		time.Sleep(backoff)
		backoff = min(backoff*2, 2*time.Second)
	}
	t := time.NewTicker(heartbeatPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.upsertNode(ctx, nc); err != nil {
				log.V(1).Info("node heartbeat failed", "err", err)
			}
		}
	}
}

func (a *agent) upsertNode(ctx context.Context, nc NodeConfig) error {
	want := a.nodeObject(nc)
	got, err := a.client.CoreV1().Nodes().Get(ctx, nc.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		got, err = a.client.CoreV1().Nodes().Create(ctx, want, metav1.CreateOptions{})
		if err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	got.Status = want.Status
	_, err = a.client.CoreV1().Nodes().UpdateStatus(ctx, got, metav1.UpdateOptions{})
	return err
}
