package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	corev1 "k8s.io/api/core/v1"
)

// tarEntry is one entry of a test layer: a directory (name ends in /), a file, or with link set
// a symlink (or a hard link when hard).
type tarEntry struct {
	name, content, link string
	hard                bool
	mode                int64
	uid                 int
}

func layerTar(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.uid}
		switch {
		case e.hard:
			h.Typeflag, h.Linkname = tar.TypeLink, e.link
		case e.link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.link
		case strings.HasSuffix(e.name, "/"):
			h.Typeflag = tar.TypeDir
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.content))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.content); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("unpacking keeps the layers' owners: needs root, as the node agent does")
	}
}

// tree lists root's content as "path" (dirs end in /, symlinks "-> target", files "=content").
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || p == root {
			return err
		}
		rel := "/" + strings.TrimPrefix(p, root+"/")
		switch {
		case info.Mode()&os.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out = append(out, rel+" -> "+l)
		case info.IsDir():
			out = append(out, rel+"/")
		default:
			b, _ := os.ReadFile(p)
			out = append(out, rel+"="+string(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLayersApplyWhiteoutsAndOpaqueDirectories(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	lower := layerTar(t,
		tarEntry{name: "etc/", mode: 0o755},
		tarEntry{name: "etc/gone", content: "lower"},
		tarEntry{name: "etc/kept", content: "lower"},
		tarEntry{name: "opaque/", mode: 0o755},
		tarEntry{name: "opaque/old", content: "lower"},
		tarEntry{name: "opaque/sub/deep", content: "lower"},
		tarEntry{name: "replaced/inner", content: "lower"},
		tarEntry{name: "bin/tool", content: "v1", mode: 0o4755, uid: 65532},
	)
	upper := layerTar(t,
		// This layer's own entry before the marker: it must survive the opaque directory.
		tarEntry{name: "opaque/mine-before", content: "upper"},
		tarEntry{name: "opaque/.wh..wh..opq"},
		tarEntry{name: "opaque/sub/fresh", content: "upper"},
		tarEntry{name: "etc/.wh.gone"},
		tarEntry{name: "replaced", content: "now a file"},
		tarEntry{name: "bin/link", link: "tool"},
		tarEntry{name: "bin/hard", link: "/bin/tool", hard: true},
	)
	for _, l := range [][]byte{lower, upper} {
		if err := unpackLayer(root, bytes.NewReader(l)); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		"/bin/", "/bin/hard=v1", "/bin/link -> tool", "/bin/tool=v1",
		"/etc/", "/etc/kept=lower",
		"/opaque/", "/opaque/mine-before=upper", "/opaque/sub/", "/opaque/sub/fresh=upper",
		"/replaced=now a file",
	}
	if got := tree(t, root); !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	st, err := os.Stat(filepath.Join(root, "bin/tool"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSetuid == 0 || st.Mode().Perm() != 0o755 {
		t.Fatalf("bin/tool mode %v: the setuid bit and permissions must survive the chown", st.Mode())
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 65532 || sys.Gid != 65532 {
		t.Fatalf("bin/tool owned by %d:%d, want the layer's 65532:65532", sys.Uid, sys.Gid)
	}
}

func TestLayerPathsNeverLeaveTheRoot(t *testing.T) {
	needRoot(t)
	outside := t.TempDir()
	root := t.TempDir()
	layer := layerTar(t,
		tarEntry{name: "../../escape", content: "x"},
		tarEntry{name: "out", link: outside},      // a symlink to a host directory...
		tarEntry{name: "out/pwned", content: "x"}, // ...must not be followed on the host
	)
	if err := unpackLayer(root, bytes.NewReader(layer)); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("a layer wrote outside its root: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(root, "escape")); err != nil {
		t.Fatalf("../../escape lands at the root: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, outside, "pwned")); err != nil {
		t.Fatalf("the symlink resolves inside the root: %v", err)
	}
}

func TestPullPolicyDecisions(t *testing.T) {
	for _, tc := range []struct {
		policy corev1.PullPolicy
		cached bool
		want   pullAction
	}{
		{corev1.PullAlways, false, resolveRegistry},
		{corev1.PullAlways, true, resolveRegistry},
		{corev1.PullIfNotPresent, false, resolveRegistry},
		{corev1.PullIfNotPresent, true, useCached},
		{corev1.PullNever, false, refuseNeverPull},
		{corev1.PullNever, true, useCached},
	} {
		if got := decidePull(tc.policy, tc.cached); got != tc.want {
			t.Errorf("%s, cached %v: got %v, want %v", tc.policy, tc.cached, got, tc.want)
		}
	}
	for ref, want := range map[string]corev1.PullPolicy{
		"127.0.0.1:5000/a":                                   corev1.PullAlways,
		"127.0.0.1:5000/a:latest":                            corev1.PullAlways,
		"127.0.0.1:5000/a:1.0":                               corev1.PullIfNotPresent,
		"127.0.0.1:5000/a@sha256:" + strings.Repeat("0", 64): corev1.PullIfNotPresent,
	} {
		named, err := reference.ParseNormalizedNamed(ref)
		if err != nil {
			t.Fatal(err)
		}
		if got := effectivePolicy("", named); got != want {
			t.Errorf("%s: default policy %s, want %s", ref, got, want)
		}
	}
}

func TestCommandReplacesEntrypointAndArgsReplaceCmd(t *testing.T) {
	ep, cmd := []string{"/entry", "-v"}, []string{"serve", "$(NOT_EXPANDED)"}
	vars := map[string]string{"WHO": "pod"}
	for _, tc := range []struct {
		command, args, want []string
	}{
		{nil, nil, []string{"/entry", "-v", "serve", "$(NOT_EXPANDED)"}},
		{nil, []string{"hello", "$(WHO)"}, []string{"/entry", "-v", "hello", "pod"}},
		{[]string{"/other"}, nil, []string{"/other"}},
		{[]string{"/other", "$(WHO)"}, []string{"x"}, []string{"/other", "pod", "x"}},
	} {
		if got := containerArgv(ep, cmd, tc.command, tc.args, vars); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("command %q args %q: got %q, want %q", tc.command, tc.args, got, tc.want)
		}
	}
}

// testRegistry serves go-containerregistry's registry, as the supervisor does.
func testRegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.WithBlobHandler(registry.NewDiskBlobHandler(t.TempDir())),
		registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func pushImage(t *testing.T, ref string, cfg v1.Config, layers ...[]byte) v1.Image {
	t.Helper()
	img := empty.Image
	for _, l := range layers {
		l := l
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(l)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			t.Fatal(err)
		}
	}
	img, err := mutate.Config(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	return img
}

func TestImagesOfTheBedRegistryArePulledOnceAndFollowThePolicy(t *testing.T) {
	needRoot(t)
	reg := testRegistry(t)
	store := newImageStore(reg, t.TempDir())
	ctx := context.Background()
	ref := reg + "/flext/tool:1"
	named, _ := reference.ParseNormalizedNamed(ref)
	if !store.serves(named) {
		t.Fatalf("%s is on the bed's registry", ref)
	}
	other, _ := reference.ParseNormalizedNamed("ghcr.io/flext/flext-kubernetes:1")
	if store.serves(other) {
		t.Fatal("images of other registries keep their host mapping")
	}

	if _, _, err := store.get(ctx, named, corev1.PullNever, ref, func() {}); !isImageError(err, "ErrImageNeverPull") ||
		err.Error() != `Container image "`+ref+`" is not present with pull policy of Never` {
		t.Fatalf("Never, nothing cached: %v", err)
	}

	v1img := pushImage(t, ref, v1.Config{Entrypoint: []string{"/tool"}, Env: []string{"A=1"}, User: "65532"},
		layerTar(t, tarEntry{name: "tool", content: "#!", mode: 0o755}))
	digest, _ := v1img.Digest()
	unknown, _ := reference.ParseNormalizedNamed(reg + "/flext/tool:nope")
	if _, _, err := store.get(ctx, unknown, corev1.PullIfNotPresent, ref, func() {}); !isImageError(err, "ErrImagePull") ||
		!strings.Contains(err.Error(), "MANIFEST_UNKNOWN") {
		t.Fatalf("unknown tag: want ErrImagePull naming the registry's answer, got %v", err)
	}
	// Concurrent first pulls of one image: one unpack, same result for all.
	var wg sync.WaitGroup
	imgs := make([]*image, 4)
	errs := make([]error, 4)
	for i := range imgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			imgs[i], _, errs[i] = store.get(ctx, named, corev1.PullIfNotPresent, ref, func() {})
		}()
	}
	wg.Wait()
	for i := range imgs {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if imgs[i].Rootfs != imgs[0].Rootfs {
			t.Fatalf("two roots for one image: %s, %s", imgs[i].Rootfs, imgs[0].Rootfs)
		}
	}
	img := imgs[0]
	if img.ID != reg+"/flext/tool@"+digest.String() || !reflect.DeepEqual(img.Entrypoint, []string{"/tool"}) || img.User != "65532" {
		t.Fatalf("image %+v (digest %s)", img, digest)
	}
	if _, err := os.Stat(filepath.Join(img.Rootfs, "tool")); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(filepath.Join(store.dir, "tmp")); len(entries) != 0 {
		t.Fatalf("unpack left temporary directories: %v", entries)
	}

	// The tag moves: IfNotPresent and Never keep the cached image, Always takes the new one.
	v2img := pushImage(t, ref, v1.Config{Cmd: []string{"v2"}}, layerTar(t, tarEntry{name: "v2", content: "2"}))
	v2, _ := v2img.Digest()
	for _, p := range []corev1.PullPolicy{corev1.PullIfNotPresent, corev1.PullNever} {
		got, res, err := store.get(ctx, named, p, ref, func() { t.Errorf("%s must not ask the registry", p) })
		if err != nil || got.ID != img.ID || res.pulled {
			t.Fatalf("%s: %+v %v", p, got, err)
		}
	}
	got, res, err := store.get(ctx, named, corev1.PullAlways, ref, func() {})
	if err != nil || got.ID != reg+"/flext/tool@"+v2.String() || !res.pulled {
		t.Fatalf("Always after the tag moved: %+v %+v %v", got, res, err)
	}
}

func TestAnIndexResolvesToTheLinuxManifestOfThisMachine(t *testing.T) {
	needRoot(t)
	reg := testRegistry(t)
	mk := func(file string) v1.Image {
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(layerTar(t, tarEntry{name: file, content: file}))), nil
		})
		if err != nil {
			t.Fatal(err)
		}
		img, err := mutate.AppendLayers(empty.Image, layer)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	this, other := runtime.GOARCH, "s390x"
	if this == other {
		other = "amd64"
	}
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: mk(other), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: other}}},
		mutate.IndexAddendum{Add: mk(this), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: this}}},
	)
	ref := reg + "/multi:1"
	r, _ := name.ParseReference(ref, name.Insecure)
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()
	named, _ := reference.ParseNormalizedNamed(ref)
	img, _, err := newImageStore(reg, t.TempDir()).get(context.Background(), named, corev1.PullIfNotPresent, ref, func() {})
	if err != nil {
		t.Fatal(err)
	}
	if got := tree(t, img.Rootfs); !reflect.DeepEqual(got, []string{"/" + this + "=" + this}) {
		t.Fatalf("unpacked %q, want this machine's platform (%s)", got, this)
	}
	if img.ID != reg+"/multi@"+idxDigest.String() {
		t.Fatalf("imageID %s: the digest the reference resolves to (the index), as the kubelet reports it", img.ID)
	}
}

func isImageError(err error, reason string) bool {
	var ie *imageError
	return errors.As(err, &ie) && ie.Reason == reason
}
