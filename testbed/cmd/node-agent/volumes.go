package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// prepareVolumes materialises the pod's volumes under <pod dir>/volumes/<name> and returns the
// host path of each. Content is written once, when the pod starts (ConfigMap and Secret updates
// are not propagated into running pods). An error is a FailedMount: the pod stays in
// ContainerCreating and the agent retries.
func (a *agent) prepareVolumes(ctx context.Context, pod *corev1.Pod, dir string) (map[string]string, error) {
	paths := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		target := filepath.Join(dir, "volumes", v.Name)
		src := v.VolumeSource
		var err error
		switch {
		case src.EmptyDir != nil:
			// World-writable, as the kubelet makes it (the umask would narrow MkdirAll's mode).
			if err = os.MkdirAll(target, 0o777); err == nil {
				err = os.Chmod(target, 0o777)
			}
		case src.HostPath != nil:
			target = src.HostPath.Path
			if src.HostPath.Type != nil && (*src.HostPath.Type == corev1.HostPathDirectoryOrCreate) {
				err = os.MkdirAll(target, 0o755)
			}
		case src.ConfigMap != nil:
			err = a.writeConfigMap(ctx, pod.Namespace, target, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, src.ConfigMap.DefaultMode)
		case src.Secret != nil:
			err = a.writeSecret(ctx, pod.Namespace, target, src.Secret.SecretName, src.Secret.Items, src.Secret.Optional, src.Secret.DefaultMode)
		case src.PersistentVolumeClaim != nil:
			// No storage provisioner here: a claim that exists is backed by a host directory of
			// its own under the agent's state, shared by every pod that mounts it (like a
			// ReadWriteMany volume), kept until the bed is removed.
			target, err = a.claimDir(ctx, pod.Namespace, src.PersistentVolumeClaim.ClaimName)
		case src.DownwardAPI != nil:
			err = writeDownward(pod, target, src.DownwardAPI.Items, src.DownwardAPI.DefaultMode)
		case src.Projected != nil:
			err = a.writeProjected(ctx, pod, target, src.Projected)
		default:
			err = fmt.Errorf("volume type not supported by the flext test bed's node agent")
		}
		if err == nil && pod.Spec.SecurityContext != nil && pod.Spec.SecurityContext.FSGroup != nil {
			switch {
			case src.EmptyDir != nil:
				err = setVolumeOwnership(target, *pod.Spec.SecurityContext.FSGroup, false)
			case src.ConfigMap != nil, src.Secret != nil, src.DownwardAPI != nil, src.Projected != nil:
				err = setVolumeOwnership(target, *pod.Spec.SecurityContext.FSGroup, true)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("MountVolume.SetUp failed for volume %q : %v", v.Name, err)
		}
		paths[v.Name] = target
	}
	return paths, nil
}

// setVolumeOwnership is the kubelet's fsGroup treatment of a volume: every file and directory
// gets the group fsGroup and group read (and write, unless the volume is read-only: Secrets,
// ConfigMaps, downward API and projected volumes) permission; directories also setgid and group
// search, so that files created later belong to the group too.
func setVolumeOwnership(dir string, fsGroup int64, readOnly bool) error {
	return filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode()&os.ModeSymlink != 0 {
			return nil
		}
		if err := os.Lchown(p, -1, int(fsGroup)); err != nil {
			return err
		}
		mask := os.FileMode(0o660)
		if readOnly {
			mask = 0o440
		}
		if info.IsDir() {
			mask |= os.ModeSetgid | 0o110
		}
		return os.Chmod(p, info.Mode()|mask)
	})
}

func mode(m *int32, def os.FileMode) os.FileMode {
	if m != nil {
		return os.FileMode(*m)
	}
	return def
}

// writeKeys writes data (key → content) into dir, mapped through items when given.
func writeKeys(dir string, data map[string][]byte, items []corev1.KeyToPath, defMode os.FileMode, kind, name string, optional bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	write := func(rel string, content []byte, m os.FileMode) error {
		p := filepath.Join(dir, filepath.Clean("/"+rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, content, m); err != nil {
			return err
		}
		return os.Chmod(p, m)
	}
	if len(items) == 0 {
		for k, v := range data {
			if err := write(k, v, defMode); err != nil {
				return err
			}
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return fmt.Errorf("configuration error: key %q not found in %s %q", it.Key, kind, name)
		}
		if err := write(it.Path, v, mode(it.Mode, defMode)); err != nil {
			return err
		}
	}
	return nil
}

func (a *agent) configMapData(ctx context.Context, ns, name string) (map[string][]byte, error) {
	cm, err := a.configMap(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return data, nil
}

func (a *agent) writeConfigMap(ctx context.Context, ns, dir, name string, items []corev1.KeyToPath, optional *bool, defMode *int32) error {
	opt := optional != nil && *optional
	data, err := a.configMapData(ctx, ns, name)
	if err != nil {
		if opt {
			return os.MkdirAll(dir, 0o755)
		}
		return fmt.Errorf("configmap %q not found", name)
	}
	return writeKeys(dir, data, items, mode(defMode, 0o644), "ConfigMap", name, opt)
}

func (a *agent) writeSecret(ctx context.Context, ns, dir, name string, items []corev1.KeyToPath, optional *bool, defMode *int32) error {
	opt := optional != nil && *optional
	s, err := a.secret(ctx, ns, name)
	if err != nil {
		if opt {
			return os.MkdirAll(dir, 0o755)
		}
		return fmt.Errorf("secret %q not found", name)
	}
	return writeKeys(dir, s.Data, items, mode(defMode, 0o644), "Secret", name, opt)
}

func writeDownward(pod *corev1.Pod, dir string, items []corev1.DownwardAPIVolumeFile, defMode *int32) error {
	data := map[string][]byte{}
	var kp []corev1.KeyToPath
	for _, it := range items {
		if it.FieldRef == nil {
			continue // resourceFieldRef in volumes: not supported
		}
		v, err := podField(pod, it.FieldRef.FieldPath)
		if err != nil {
			return err
		}
		data[it.Path] = []byte(v)
		kp = append(kp, corev1.KeyToPath{Key: it.Path, Path: it.Path, Mode: it.Mode})
	}
	return writeKeys(dir, data, kp, mode(defMode, 0o644), "downwardAPI", "", false)
}

// writeProjected handles projected volumes, including the kube-api-access-* volume the
// ServiceAccount admission plugin adds: a bound token from the TokenRequest API, the cluster CA
// from kube-root-ca.crt, and the namespace.
func (a *agent) writeProjected(ctx context.Context, pod *corev1.Pod, dir string, p *corev1.ProjectedVolumeSource) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, s := range p.Sources {
		var err error
		switch {
		case s.ConfigMap != nil:
			err = a.writeConfigMap(ctx, pod.Namespace, dir, s.ConfigMap.Name, s.ConfigMap.Items, s.ConfigMap.Optional, p.DefaultMode)
		case s.Secret != nil:
			err = a.writeSecret(ctx, pod.Namespace, dir, s.Secret.Name, s.Secret.Items, s.Secret.Optional, p.DefaultMode)
		case s.DownwardAPI != nil:
			err = writeDownward(pod, dir, s.DownwardAPI.Items, p.DefaultMode)
		case s.ServiceAccountToken != nil:
			err = a.writeToken(ctx, pod, dir, s.ServiceAccountToken, mode(p.DefaultMode, 0o644))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (a *agent) writeToken(ctx context.Context, pod *corev1.Pod, dir string, t *corev1.ServiceAccountTokenProjection, m os.FileMode) error {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: t.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if t.Audience != "" {
		req.Spec.Audiences = []string{t.Audience}
	}
	tr, err := a.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("failed to fetch token: %v", err)
	}
	p := filepath.Join(dir, filepath.Clean("/"+t.Path))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p, []byte(strings.TrimSpace(tr.Status.Token)), m); err != nil {
		return err
	}
	return os.Chmod(p, m)
}

// claimDir returns the host directory backing a PersistentVolumeClaim, creating it on first use;
// a missing claim is a mount failure, as on a real node.
func (a *agent) claimDir(ctx context.Context, ns, claim string) (string, error) {
	if _, err := a.client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{}); err != nil {
		return "", fmt.Errorf("persistentvolumeclaim %q not found", claim)
	}
	dir := filepath.Join(a.stateDir, "claims", ns, claim)
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return "", err
	}
	// World-writable like an emptyDir: pods run as non-root users.
	return dir, os.Chmod(dir, 0o777)
}
