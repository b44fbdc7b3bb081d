package k8s

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// overlays are the directories under overlays/ that a user applies.
var overlays = []string{"dev", "prod", "sim"}

// object is one rendered resource: its identity and its JSON.
type object struct {
	APIVersion, Kind, Name, Namespace string
	JSON                              []byte
	node                              *yaml.RNode
}

func (o object) String() string {
	return fmt.Sprintf("%s %s/%s", o.Kind, o.Namespace, o.Name)
}

var (
	renderOnce sync.Once
	rendered   map[string][]object
	renderErr  error
)

// render builds every overlay once per test binary, as `kubectl apply -k`
// would (Kustomize's default options: files only from inside each
// kustomization's own directory).
func render(t *testing.T) map[string][]object {
	t.Helper()
	renderOnce.Do(func() {
		rendered = make(map[string][]object)
		for _, name := range overlays {
			objs, err := build(filepath.Join("overlays", name))
			if err != nil {
				renderErr = fmt.Errorf("overlay %s: %w", name, err)
				return
			}
			rendered[name] = objs
		}
	})
	if renderErr != nil {
		t.Fatal(renderErr)
	}
	return rendered
}

func build(dir string) ([]object, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, err
	}
	var objs []object
	for _, r := range resMap.Resources() {
		node := r.RNode.Copy()
		js, err := node.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.CurId(), err)
		}
		objs = append(objs, object{
			APIVersion: node.GetApiVersion(), Kind: node.GetKind(),
			Name: node.GetName(), Namespace: node.GetNamespace(),
			JSON: js, node: node,
		})
	}
	return objs, nil
}

// eachOverlay runs fn as a subtest per overlay.
func eachOverlay(t *testing.T, fn func(t *testing.T, overlay string, objs []object)) {
	t.Helper()
	all := render(t)
	for _, name := range overlays {
		t.Run(name, func(t *testing.T) { fn(t, name, all[name]) })
	}
}

func TestOverlaysBuild(t *testing.T) {
	entries, err := os.ReadDir("overlays")
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	if !slices.Equal(dirs, overlays) {
		t.Errorf("overlays/ holds %v; the checks cover %v: keep them in step", dirs, overlays)
	}
	eachOverlay(t, func(t *testing.T, overlay string, objs []object) {
		if len(objs) == 0 {
			t.Fatal("no objects")
		}
		for _, o := range objs {
			if o.Kind != "Namespace" && o.Namespace == "" {
				t.Errorf("%s: no namespace", o)
			}
		}
		t.Logf("%d objects", len(objs))
	})
}
