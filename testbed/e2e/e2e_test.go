// Package e2e tests the running test bed as a whole. It needs `scripts/testbed up` and
// FLEXT_TESTBED_DIR (from `scripts/testbed env`); `scripts/testbed test` runs it. Without
// FLEXT_TESTBED_E2E=1 the tests skip, so `go test ./...` stays a unit-test run.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func bed(t *testing.T) (*kubernetes.Clientset, string) {
	t.Helper()
	if os.Getenv("FLEXT_TESTBED_E2E") != "1" {
		t.Skip("set FLEXT_TESTBED_E2E=1 with a running bed (scripts/testbed test does)")
	}
	dir := os.Getenv("FLEXT_TESTBED_DIR")
	if dir == "" {
		t.Fatal(`FLEXT_TESTBED_DIR is not set: run scripts/testbed up && eval "$(scripts/testbed env)"`)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, "kubeconfig"))
	if err != nil {
		t.Fatalf("no test bed in %s (run scripts/testbed up): %v", dir, err)
	}
	cfg.Timeout = 5 * time.Second
	cfg.QPS, cfg.Burst = 200, 400 // the load test must measure the bed, not client-side throttling
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Discovery().ServerVersion(); err != nil {
		t.Fatalf("test bed not reachable (run scripts/testbed up): %v", err)
	}
	return c, dir
}

func script(t *testing.T, args ...string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	out, err := exec.Command(filepath.Join(filepath.Dir(file), "..", "..", "scripts", "testbed"), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/testbed %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// poll retries f every 100ms until it returns nil or the deadline passes.
func poll(t *testing.T, what string, limit time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", limit, what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The worker must ride out an apiserver restart; the bed must too: the same Job machinery
// (controller manager, node agent) works against the restarted apiserver without any help.
func TestJobsRunAfterTheAPIServerRestarts(t *testing.T) {
	c, _ := bed(t)
	ctx := context.Background()
	ns := fmt.Sprintf("e2e-restart-%d", time.Now().UnixNano())
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer c.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})

	t.Log(script(t, "restart-apiserver"))

	poll(t, "the namespace's default ServiceAccount", time.Minute, func() error {
		_, err := c.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	zero := int32(0)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "after-restart"},
		Spec: batchv1.JobSpec{BackoffLimit: &zero, Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "main", Image: "busybox:1.36", Command: []string{"echo", "still here"}}},
		}}},
	}
	poll(t, "the Job to be created", time.Minute, func() error {
		_, err := c.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{})
		return err
	})
	poll(t, "the Job to complete", time.Minute, func() error {
		j, err := c.BatchV1().Jobs(ns).Get(ctx, "after-restart", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range j.Status.Conditions {
			if cond.Type == batchv1.JobComplete && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("status %+v", j.Status)
	})
}

// The worker aims at 50 jobs/s; the bed must not be the bottleneck. Creates
// FLEXT_TESTBED_LOAD_JOBS Jobs (default 100) at once and waits for all to complete.
func TestManyConcurrentJobsAllComplete(t *testing.T) {
	c, _ := bed(t)
	ctx := context.Background()
	n := 100
	if v := os.Getenv("FLEXT_TESTBED_LOAD_JOBS"); v != "" {
		fmt.Sscan(v, &n)
	}
	ns := fmt.Sprintf("e2e-load-%d", time.Now().UnixNano())
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer c.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	poll(t, "the namespace's default ServiceAccount", time.Minute, func() error {
		_, err := c.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	zero := int32(0)
	start := time.Now()
	errs := make(chan error, n)
	for i := range n {
		go func() {
			job := &batchv1.Job{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("load-%d", i)},
				Spec: batchv1.JobSpec{BackoffLimit: &zero, Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
					RestartPolicy: corev1.RestartPolicyNever,
					Containers:    []corev1.Container{{Name: "main", Image: "busybox:1.36", Command: []string{"echo", "done"}}},
				}}},
			}
			_, err := c.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{})
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	created := time.Since(start)
	poll(t, fmt.Sprintf("%d Jobs to complete", n), 3*time.Minute, func() error {
		jobs, err := c.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		done := 0
		for _, j := range jobs.Items {
			for _, cond := range j.Status.Conditions {
				if cond.Type == batchv1.JobComplete && cond.Status == corev1.ConditionTrue {
					done++
				}
			}
		}
		if done < n {
			return fmt.Errorf("%d/%d complete", done, n)
		}
		return nil
	})
	total := time.Since(start)
	t.Logf("%d Jobs created in %s, all Complete after %s (%.1f jobs/s)", n, created.Round(time.Millisecond), total.Round(time.Millisecond), float64(n)/total.Seconds())
}
