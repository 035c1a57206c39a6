package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func imageRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"passwd": "root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
		"group":  "root:x:0:\nnonroot:x:65532:\ntools:x:4000:nonroot\n",
	}
	for f, content := range files {
		if err := os.WriteFile(filepath.Join(root, "etc", f), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func ptr64(v int64) *int64 { return &v }

func TestImageUserIsResolvedThroughTheImagesPasswdAndGroup(t *testing.T) {
	root := imageRoot(t)
	for _, tc := range []struct {
		user string
		sec  securityUser
		want identity
	}{
		{"", securityUser{}, identity{UID: 0, GID: 0, Groups: []uint32{0}, Home: "/root"}},
		{"65532", securityUser{}, identity{UID: 65532, GID: 65532, Groups: []uint32{65532, 4000}, Home: "/home/nonroot"}},
		{"nonroot", securityUser{}, identity{UID: 65532, GID: 65532, Groups: []uint32{65532, 4000}, Home: "/home/nonroot"}},
		{"nonroot:tools", securityUser{}, identity{UID: 65532, GID: 4000, Groups: []uint32{4000}, Home: "/home/nonroot"}},
		{"1234:5678", securityUser{}, identity{UID: 1234, GID: 5678, Groups: []uint32{5678}, Home: "/"}},
		// runAsUser replaces the image's user and group; runAsGroup the group.
		{"nonroot:tools", securityUser{runAsUser: ptr64(1000)}, identity{UID: 1000, GID: 0, Groups: []uint32{0}, Home: "/"}},
		{"65532", securityUser{runAsGroup: ptr64(7)}, identity{UID: 65532, GID: 7, Groups: []uint32{7, 4000}, Home: "/home/nonroot"}},
		{"65532", securityUser{fsGroup: ptr64(2000), supplemental: []int64{3000, 2000}},
			identity{UID: 65532, GID: 65532, Groups: []uint32{65532, 4000, 2000, 3000}, Home: "/home/nonroot"}},
	} {
		got, err := resolveIdentity(root, tc.user, tc.sec, "img")
		if err != nil {
			t.Fatalf("%q: %v", tc.user, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("user %q %+v: got %+v, want %+v", tc.user, tc.sec, got, tc.want)
		}
	}
	for _, user := range []string{"nobody", "nonroot:nogroup"} {
		if _, err := resolveIdentity(root, user, securityUser{}, "img"); err == nil {
			t.Errorf("%q: an unresolvable name must be a CreateContainerConfigError", user)
		} else if _, ok := err.(*configError); !ok {
			t.Errorf("%q: %T, want a configError", user, err)
		}
	}
}

func TestRunAsNonRootRefusesRootAsTheKubeletDoes(t *testing.T) {
	yes := true
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u"},
		Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes}}}
	c := &corev1.Container{Name: "main"}
	msg := func(user string, c *corev1.Container) string {
		err := verifyRunAsNonRoot(effectiveSecurity(pod, c), user, pod, c)
		if err == nil {
			return ""
		}
		return err.Error()
	}
	for user, want := range map[string]string{
		"":        `container has runAsNonRoot and image will run as root (pod: "p_ns(u)", container: main)`,
		"0:0":     `container has runAsNonRoot and image will run as root (pod: "p_ns(u)", container: main)`,
		"nonroot": `container has runAsNonRoot and image has non-numeric user (nonroot), cannot verify user is non-root (pod: "p_ns(u)", container: main)`,
		"65532":   "",
	} {
		if got := msg(user, c); got != want {
			t.Errorf("image user %q: got %q, want %q", user, got, want)
		}
	}
	// The container's runAsUser decides, over the image's user.
	c.SecurityContext = &corev1.SecurityContext{RunAsUser: ptr64(0)}
	if got := msg("65532", c); got != `container's runAsUser breaks non-root policy (pod: "p_ns(u)", container: main)` {
		t.Errorf("runAsUser 0: %q", got)
	}
	c.SecurityContext = &corev1.SecurityContext{RunAsUser: ptr64(1000)}
	if got := msg("", c); got != "" {
		t.Errorf("runAsUser 1000 over a root image: %q", got)
	}
	no := false
	c.SecurityContext = &corev1.SecurityContext{RunAsNonRoot: &no}
	if got := msg("", c); got != "" {
		t.Errorf("the container's runAsNonRoot false overrides the pod's: %q", got)
	}
}
