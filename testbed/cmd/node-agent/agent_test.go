package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func testNode(name string, mem string, taints ...corev1.Taint) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"pool": name}},
		Spec:       corev1.NodeSpec{Taints: taints},
		Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse(mem),
			corev1.ResourcePods: resource.MustParse("110"),
		}},
	}
}

func podRequesting(mem string) *corev1.Pod {
	return &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{
		Name: "main", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(mem)}},
	}}}}
}

func TestUnschedulablePodGetsTheSchedulersMessage(t *testing.T) {
	gpu := corev1.Taint{Key: "nvidia.com/gpu", Value: "present", Effect: corev1.TaintEffectNoSchedule}
	nodes := []*corev1.Node{testNode("a", "1Gi"), testNode("b", "8Gi", gpu)}
	reasons := map[string]int{}
	for _, n := range nodes {
		for _, r := range fits(podRequesting("2Gi"), n, nil, 0) {
			reasons[r]++
		}
	}
	got := unschedulableMessage(len(nodes), reasons)
	want := "0/2 nodes are available: 1 Insufficient memory, 1 node(s) had untolerated taint {nvidia.com/gpu: present}."
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func TestPodFitsWhenTolerationsSelectorAndCapacityAllow(t *testing.T) {
	gpu := corev1.Taint{Key: "nvidia.com/gpu", Value: "present", Effect: corev1.TaintEffectNoSchedule}
	n := testNode("b", "8Gi", gpu)
	p := podRequesting("2Gi")
	p.Spec.NodeSelector = map[string]string{"pool": "b"}
	p.Spec.Tolerations = []corev1.Toleration{{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists}}
	if why := fits(p, n, nil, 0); len(why) != 0 {
		t.Fatalf("expected a fit, got %v", why)
	}
	used := corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("7Gi")}
	if why := fits(p, n, used, 1); len(why) != 1 || why[0] != "Insufficient memory" {
		t.Fatalf("expected Insufficient memory with 7Gi used, got %v", why)
	}
	p.Spec.NodeSelector = map[string]string{"pool": "elsewhere"}
	if why := fits(p, n, nil, 0); len(why) != 1 || !strings.Contains(why[0], "affinity/selector") {
		t.Fatalf("expected a selector mismatch, got %v", why)
	}
}

func TestImagesResolveThroughTheConfig(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "c.yaml")
	_ = os.WriteFile(cfgPath, []byte("nodes: [{name: n}]\nimages:\n- match: ['python:*']\n  command: [python3]\n"), 0o644)
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if img, full, err := cfg.resolveImage("python:3.12"); err != nil || img.Command[0] != "python3" || full != "docker.io/library/python:3.12" {
		t.Fatalf("python:3.12 → %v %q %v", img, full, err)
	}
	if _, _, err := cfg.resolveImage("docker.io/library/python:3.11"); err != nil {
		t.Fatalf("fully qualified python: %v", err)
	}
	for image, reason := range map[string]string{"busybox": "ErrImagePull", "Not Valid": "InvalidImageName"} {
		_, _, err := cfg.resolveImage(image)
		if ie, ok := err.(*imageError); !ok || ie.Reason != reason {
			t.Fatalf("%q: want %s, got %v", image, reason, err)
		}
	}
}

func writeLog(t *testing.T, lines ...string) (string, []time.Time) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "0.log")
	w, err := newLogWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	var stamps []time.Time
	for _, l := range lines {
		stamps = append(stamps, time.Now())
		w.copyStream("stdout", strings.NewReader(l+"\n"))
		time.Sleep(2 * time.Millisecond)
	}
	w.close()
	return path, stamps
}

func readLog(t *testing.T, path string, o logOptions) string {
	t.Helper()
	var b bytes.Buffer
	if err := streamLog(&b, func() {}, path, o, func() bool { return false }); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestLogEndpointOptions(t *testing.T) {
	path, stamps := writeLog(t, "one", "two", "three")
	all := logOptions{tailLines: -1, limitBytes: -1}
	if got := readLog(t, path, all); got != "one\ntwo\nthree\n" {
		t.Fatalf("all: %q", got)
	}
	tail := all
	tail.tailLines = 1
	if got := readLog(t, path, tail); got != "three\n" {
		t.Fatalf("tail: %q", got)
	}
	limit := all
	limit.limitBytes = 5
	if got := readLog(t, path, limit); got != "one\nt" {
		t.Fatalf("limit: %q", got)
	}
	since := all
	since.since = stamps[1]
	if got := readLog(t, path, since); got != "two\nthree\n" {
		t.Fatalf("since: %q", got)
	}
	ts := all
	ts.timestamps = true
	first := strings.SplitN(readLog(t, path, ts), "\n", 2)[0]
	stamp, text, _ := strings.Cut(first, " ")
	if _, err := time.Parse(time.RFC3339Nano, stamp); err != nil || text != "one" {
		t.Fatalf("timestamps: %q (%v)", first, err)
	}
}

func TestLongLinesAreSplitAndJoinedAgain(t *testing.T) {
	long := strings.Repeat("x", maxLogLine*2+10)
	path, _ := writeLog(t, long)
	raw, _ := os.ReadFile(path)
	if n := strings.Count(string(raw), " stdout P "); n != 2 {
		t.Fatalf("want 2 partial records, got %d", n)
	}
	if got := readLog(t, path, logOptions{tailLines: -1, limitBytes: -1}); got != long+"\n" {
		t.Fatalf("joined line has %d bytes, want %d", len(got), len(long)+1)
	}
}

func TestTerminationMessageFallsBackToTheLogTail(t *testing.T) {
	dir := t.TempDir()
	termLog := filepath.Join(dir, "termination-log")
	_ = os.WriteFile(termLog, nil, 0o644)
	var lines []string
	for i := 0; i < 100; i++ {
		lines = append(lines, "l")
	}
	path, _ := writeLog(t, lines...)
	got := terminationMessage(termLog, path, corev1.TerminationMessageFallbackToLogsOnError, 1)
	if strings.Count(got, "\n") != 80 {
		t.Fatalf("want the last 80 lines, got %d", strings.Count(got, "\n"))
	}
	if got := terminationMessage(termLog, path, corev1.TerminationMessageReadFile, 1); got != "" {
		t.Fatalf("File policy must not read logs: %q", got)
	}
	_ = os.WriteFile(termLog, []byte(strings.Repeat("y", 5000)), 0o644)
	if got := terminationMessage(termLog, path, corev1.TerminationMessageFallbackToLogsOnError, 1); len(got) != 4096 {
		t.Fatalf("file message capped at 4096 bytes, got %d", len(got))
	}
}
