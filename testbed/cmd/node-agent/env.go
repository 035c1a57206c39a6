package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/kubernetes/third_party/forked/golang/expansion"
)

// configError is a CreateContainerConfigError: a referenced ConfigMap/Secret or key is missing.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

// runConfig is a container's configuration as the kubelet generates it before creating it.
type runConfig struct {
	env  []string          // the process environment
	vars map[string]string // what $(VAR) in command and args expands from
	user *identity         // nil: root (host-mapped images)
}

// containerConfig checks the container's user (pulled images only: host-mapped images run as
// root, whatever the securityContext says) and computes its environment. Errors are
// CreateContainerConfigErrors.
func (a *agent) containerConfig(ctx context.Context, pod *corev1.Pod, c *corev1.Container, img *image) (*runConfig, error) {
	rc := &runConfig{}
	home := "/root"
	if img.Pulled {
		s := effectiveSecurity(pod, c)
		if err := verifyRunAsNonRoot(s, img.User, pod, c); err != nil {
			return nil, err
		}
		id, err := resolveIdentity(img.Rootfs, img.User, s, c.Image)
		if err != nil {
			return nil, err
		}
		rc.user, home = &id, id.Home
	}
	var err error
	rc.env, rc.vars, err = a.containerEnv(ctx, pod, c, img, home)
	return rc, err
}

// containerEnv computes a container's environment the way the kubelet and the runtime do: the
// image's env, HOSTNAME and HOME, then the service variables, envFrom, then env (with $(VAR)
// expansion against what precedes). For a pulled image, $(VAR) sees only the variables the
// kubelet defines, as on a node (not the image's); host mappings also expand the image's.
func (a *agent) containerEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container, img *image, home string) ([]string, map[string]string, error) {
	env := map[string]string{}
	vars := env
	if img.Pulled {
		vars = map[string]string{}
	}
	var order []string
	set := func(k, v string) {
		if _, ok := env[k]; !ok {
			order = append(order, k)
		}
		env[k] = v
		vars[k] = v
	}
	setImage := func(k, v string) { // a variable the kubelet does not define
		if _, ok := env[k]; !ok {
			order = append(order, k)
		}
		env[k] = v
	}
	for _, kv := range img.Env {
		k, v, _ := strings.Cut(kv, "=")
		setImage(k, v)
	}
	setImage("HOSTNAME", pod.Name)
	if _, ok := env["HOME"]; !ok || !img.Pulled {
		setImage("HOME", home)
	}
	// In-cluster clients inside pods reach the bed's apiserver directly on loopback.
	set("KUBERNETES_SERVICE_HOST", "127.0.0.1")
	set("KUBERNETES_SERVICE_PORT", a.apiPort)
	set("KUBERNETES_SERVICE_PORT_HTTPS", a.apiPort)
	set("KUBERNETES_PORT", "tcp://127.0.0.1:"+a.apiPort)
	ns := pod.Namespace
	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			cm, err := a.configMap(ctx, ns, from.ConfigMapRef.Name)
			if err != nil {
				if from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional {
					continue
				}
				return nil, nil, &configError{fmt.Sprintf("configmap %q not found", from.ConfigMapRef.Name)}
			}
			data = cm.Data
		case from.SecretRef != nil:
			s, err := a.secret(ctx, ns, from.SecretRef.Name)
			if err != nil {
				if from.SecretRef.Optional != nil && *from.SecretRef.Optional {
					continue
				}
				return nil, nil, &configError{fmt.Sprintf("secret %q not found", from.SecretRef.Name)}
			}
			data = map[string]string{}
			for k, v := range s.Data {
				data[k] = string(v)
			}
		}
		ks := make([]string, 0, len(data))
		for k := range data {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			set(from.Prefix+k, data[k])
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expansion.Expand(e.Value, expansion.MappingFuncFor(vars)))
			continue
		}
		v, ok, err := a.envValueFrom(ctx, pod, c, e.ValueFrom)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			set(e.Name, v)
		}
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+env[k])
	}
	return out, vars, nil
}

func (a *agent) envValueFrom(ctx context.Context, pod *corev1.Pod, c *corev1.Container, from *corev1.EnvVarSource) (string, bool, error) {
	ns := pod.Namespace
	switch {
	case from.ConfigMapKeyRef != nil:
		r := from.ConfigMapKeyRef
		optional := r.Optional != nil && *r.Optional
		cm, err := a.configMap(ctx, ns, r.Name)
		if err != nil {
			if optional {
				return "", false, nil
			}
			return "", false, &configError{fmt.Sprintf("configmap %q not found", r.Name)}
		}
		v, ok := cm.Data[r.Key]
		if !ok && !optional {
			return "", false, &configError{fmt.Sprintf("couldn't find key %s in ConfigMap %s/%s", r.Key, ns, r.Name)}
		}
		return v, ok, nil
	case from.SecretKeyRef != nil:
		r := from.SecretKeyRef
		optional := r.Optional != nil && *r.Optional
		s, err := a.secret(ctx, ns, r.Name)
		if err != nil {
			if optional {
				return "", false, nil
			}
			return "", false, &configError{fmt.Sprintf("secret %q not found", r.Name)}
		}
		v, ok := s.Data[r.Key]
		if !ok && !optional {
			return "", false, &configError{fmt.Sprintf("couldn't find key %s in Secret %s/%s", r.Key, ns, r.Name)}
		}
		return string(v), ok, nil
	case from.FieldRef != nil:
		v, err := podField(pod, from.FieldRef.FieldPath)
		if err != nil {
			return "", false, &configError{err.Error()}
		}
		return v, true, nil
	case from.ResourceFieldRef != nil:
		v, err := resourceField(c, from.ResourceFieldRef)
		if err != nil {
			return "", false, &configError{err.Error()}
		}
		return v, true, nil
	}
	return "", false, nil
}

// podField resolves a downward API field path.
func podField(pod *corev1.Pod, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.hostIP", "status.podIPs", "status.hostIPs":
		return "127.0.0.1", nil
	case "metadata.labels", "metadata.annotations":
		m := pod.Labels
		if path == "metadata.annotations" {
			m = pod.Annotations
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		s := ""
		for _, k := range keys {
			s += k + "=" + strconv.Quote(m[k]) + "\n"
		}
		return s, nil
	}
	var key string
	if n, _ := fmt.Sscanf(path, "metadata.labels['%s", &key); n == 1 && len(key) > 2 {
		return pod.Labels[key[:len(key)-2]], nil
	}
	if n, _ := fmt.Sscanf(path, "metadata.annotations['%s", &key); n == 1 && len(key) > 2 {
		return pod.Annotations[key[:len(key)-2]], nil
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

func resourceField(c *corev1.Container, r *corev1.ResourceFieldSelector) (string, error) {
	var q resource.Quantity
	var ok bool
	switch r.Resource {
	case "limits.cpu":
		q, ok = c.Resources.Limits[corev1.ResourceCPU]
	case "limits.memory":
		q, ok = c.Resources.Limits[corev1.ResourceMemory]
	case "requests.cpu":
		q, ok = c.Resources.Requests[corev1.ResourceCPU]
	case "requests.memory":
		q, ok = c.Resources.Requests[corev1.ResourceMemory]
	case "limits.ephemeral-storage":
		q, ok = c.Resources.Limits[corev1.ResourceEphemeralStorage]
	case "requests.ephemeral-storage":
		q, ok = c.Resources.Requests[corev1.ResourceEphemeralStorage]
	default:
		return "", fmt.Errorf("unsupported resourceFieldRef %q", r.Resource)
	}
	if !ok {
		return "0", nil
	}
	divisor := resource.MustParse("1")
	if !r.Divisor.IsZero() {
		divisor = r.Divisor
	}
	if r.Resource == "limits.cpu" || r.Resource == "requests.cpu" {
		// Rounded up, as the kubelet does.
		return strconv.FormatInt((q.MilliValue()+divisor.MilliValue()-1)/divisor.MilliValue(), 10), nil
	}
	return strconv.FormatInt((q.Value()+divisor.Value()-1)/divisor.Value(), 10), nil
}
