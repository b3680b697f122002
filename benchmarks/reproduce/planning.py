"""Planning a reproduction run: the presets file, the (dataset, model) jobs of a preset with their
layered settings, and the preparation of a dataset that is not in --data-path yet."""

import os

import yaml


def load_yaml(path, what):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")
    with open(path) as f:
        return yaml.safe_load(f) or {}


def load_presets(path):
    spec = load_yaml(path, "preset")
    missing = [key for key in ("models", "datasets", "kinds", "presets") if key not in spec]
    if missing:
        raise ValueError(f"{path}: missing top-level key(s) {missing}; see benchmarks/presets.yaml for the layout")
    for name, entry in spec["datasets"].items():
        if entry.get("kind") not in spec["kinds"]:
            raise ValueError(f"{path}: dataset '{name}' has kind {entry.get('kind')!r}, not one of {list(spec['kinds'])}")
    for name, entry in spec["models"].items():
        if entry.get("data") not in spec["kinds"]:
            raise ValueError(f"{path}: model '{name}' has data {entry.get('data')!r}, not one of {list(spec['kinds'])}")
    return spec


def _known(spec, section, names, path):
    unknown = [n for n in names if n not in spec[section]]
    if unknown:
        raise ValueError(f"unknown {section} {unknown}; {path} lists {', '.join(spec[section])} "
                         f"(add an entry under '{section}:' there to use another)")


def model_config_files(model, alias):
    """configs/model/<Model>/<alias>.yaml, where a converted dataset borrows another dataset's
    per-model settings (beauty -> ASRec's amazon-beauty)."""
    if not alias:
        return []
    from masan_recbole.config import CONFIG_DIR
    from masan_recbole.registry import canonical_name

    path = os.path.join(CONFIG_DIR, "model", canonical_name(model), f"{alias}.yaml")
    return [path] if os.path.isfile(path) else []


def settings_layers(preset, datasets, epochs=None, settings=None):
    """The preset's settings as the jobs receive them: ``shared``, per dataset of ``datasets`` and
    per-model ``overrides`` (lowest priority first). The command line's ``settings`` (--set) and
    ``epochs`` are the top layer: they join the shared settings and replace any dataset's or
    model's own value of the same key."""
    shared = dict(preset.get("shared") or {})
    per_dataset = {d: dict((preset.get("datasets") or {}).get(d) or {}) for d in datasets}
    overrides = {m: dict(o or {}) for m, o in (preset.get("overrides") or {}).items()}
    top = dict(settings or {})
    if epochs is not None:
        top["epochs"] = epochs
    shared.update(top)
    for layer in (*per_dataset.values(), *overrides.values()):
        for key in top:
            layer.pop(key, None)
    return {"shared": shared, "datasets": per_dataset, "overrides": overrides}


def setting(item):
    """One ``--set key=value`` as (key, value), the value read as YAML (64 -> int, true -> bool)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--set takes key=value, got {item!r}")
    return key, yaml.safe_load(value)


def plan(spec, preset_name, models=None, datasets=None, epochs=None, path="presets file", settings=None):
    """The (dataset, model) jobs of a preset with their settings (:func:`settings_layers`), and the
    pairs left out because the model does not run on that kind of data."""
    if preset_name not in spec["presets"]:
        raise ValueError(f"unknown preset '{preset_name}'; {path} has {', '.join(spec['presets'])}")
    preset = spec["presets"][preset_name]
    dataset_names = datasets or list(preset.get("datasets") or {})
    model_names = models or preset["models"]
    _known(spec, "datasets", dataset_names, path)
    _known(spec, "models", model_names, path)
    if epochs is not None and epochs < 1:
        raise ValueError(f"--epochs must be at least 1, got {epochs}")
    layers = settings_layers(preset, dataset_names, epochs, settings)
    jobs, skipped = [], []
    for dataset in dataset_names:
        entry = spec["datasets"][dataset]
        for model in model_names:
            if spec["models"][model]["data"] != entry["kind"]:
                skipped.append(f"{model} on {dataset} ({spec['models'][model]['data']} model, {entry['kind']} data)")
                continue
            config = {**layers["shared"], **layers["datasets"][dataset], **layers["overrides"].get(model, {})}
            jobs.append({"dataset": dataset, "model": model, "config": config,
                         "config_files": model_config_files(model, entry.get("model_configs_as"))})
    if not jobs:
        raise ValueError(f"nothing to run: no model of {model_names} runs on the data of {dataset_names} "
                         f"(skipped: {'; '.join(skipped)})")
    return jobs, skipped


def has_atomic_files(folder, name):
    return any(os.path.isfile(os.path.join(folder, f"{name}{suffix}")) for suffix in (".inter", ".train.inter"))


def ensure_dataset(name, entry, data_path, shared):
    """Convert ``name`` from the shared datasets into ``<data_path>/<name>/`` unless it is there
    (or ships in the recbole wheel). Returns the converter's counts, or None if nothing was done."""
    from masan_recbole.config import WHEEL_DATASETS

    folder = os.path.join(data_path, name)
    if has_atomic_files(folder, name):
        return None
    source = entry.get("source")
    if not source:
        if os.path.isdir(os.path.join(WHEEL_DATASETS, name)):
            return None
        raise FileNotFoundError(f"dataset '{name}': no {name}.inter in {folder} and no 'source' to convert it "
                                f"from; put the atomic files there or give it a source in the presets file")
    from masan_recbole.data import CONVERTERS, convert

    if name not in CONVERTERS:
        raise ValueError(f"dataset '{name}' is not in {folder} and masan_recbole.data has no converter for it "
                         f"(converters: {', '.join(sorted(CONVERTERS))})")
    source_dir = os.path.join(shared, source)
    if not os.path.exists(source_dir):
        raise FileNotFoundError(f"dataset '{name}': source {source_dir} not found; pass --shared DIR, the folder "
                                f"that holds {source}/ (the project's shared datasets)")
    print(f"converting {name}: {source_dir} -> {folder}", flush=True)
    return convert(name, source_dir, data_path)
