"""Pieces of the report on hand-made records: the Pareto frontier and reading an analysis.json that holds both
component- and node-level runs (the verdict's rule: test_verdict.py)."""

from __future__ import annotations

from glassformer.analysis.report.collect import read_circuits
from glassformer.analysis.report.compare import pareto_front, unique_names


def test_the_pareto_front_keeps_the_undominated_models():
    points = [("dense", 10.0, 5.0), ("sparse", 4.0, 5.4), ("worse", 12.0, 5.5), ("tie", 10.0, 5.0),
              ("unknown", None, 4.0)]
    assert pareto_front(points) == ["sparse", "dense", "tie"]


def test_two_folders_with_one_name_get_their_parents_in_front():
    from pathlib import Path

    assert unique_names([Path("x/a/run"), Path("y/a/run"), Path("z")]) == ["x/a/run", "y/a/run", "z"]


NODE_RUN = {
    "settings": {"level": "node", "method": "mask", "ablation": "mean", "n_pairs": 8, "seed": 0,
                 "controls": ["random_init", "shuffled_labels"], "target_loss": 0.15},
    "graph": {"level": "node", "n_nodes": 500}, "capability": {"val_loss": 5.0},
    "tasks": {"induction": {"status": "ok", "description": "copy", "n_pairs": 8, "example": None,
                            "capability": {"model": {"accuracy": 0.9, "loss": 0.2}},
                            "circuits": [{"level": "node", "method": "mask", "selection": "mask",
                                          "n_nodes_total": 500,
                                          "nodes": {"model": 12, "random_init": None, "shuffled_labels": 40},
                                          "edges": {"model": 30, "random_init": None, "shuffled_labels": 90},
                                          "reached": {"model": True, "random_init": False,
                                                      "shuffled_labels": True},
                                          "circuit": ["a0.q[h1.3]", "m1.hidden[17]"]}]}},
    "summary": [{"level": "node", "method": "mask", "ablation": "mean", "selection": "mask", "n_tasks": 1,
                 "geomean_nodes": {"model": 12.0, "random_init": None, "shuffled_labels": 40.0},
                 "geomean_edges": {"model": 30.0, "random_init": None, "shuffled_labels": 90.0}}],
}


def test_node_level_runs_are_read_beside_component_ones():
    component = {"settings": {"level": "component", "method": "eap-ig", "ablation": "mean"},
                 "tasks": {"induction": {"status": "ok", "capability": {}, "circuits": [
                     {"level": "component", "method": "eap-ig", "selection": "greedy", "n_edges_total": 46,
                      "N_0.8": {"model": {"edges": 7}, "random_init": {"edges": 3}, "shuffled_labels": {"edges": 9}},
                      "signal": {"model": True}, "top_edges": {"model": [["input->logits", 0.5]]}}]}},
                 "summary": [{"level": "component", "method": "eap-ig", "selection": "greedy", "n_tasks": 1,
                              "geomean_N_0.8": {"model": 7.0, "random_init": 3.0, "shuffled_labels": 9.0}}]}
    analysis = {"results": {"component/eap-ig/mean": component, "node/mask/mean": NODE_RUN}}
    sizes, tasks = read_circuits(analysis)
    assert sizes["component"]["key"] == "N_0.8" and sizes["component"]["unit"] == "edges"
    assert sizes["node"]["key"] == "nodes" and sizes["node"]["unit"] == "nodes"
    assert sizes["node"]["geomean"] == {"model": 12.0, "random_init": None, "shuffled_labels": 40.0}
    (task,) = tasks
    assert task["circuits"]["component"]["size"] == {"model": 7, "random_init": 3, "shuffled_labels": 9}
    node = task["circuits"]["node"]
    assert node["size"] == {"model": 12, "random_init": None, "shuffled_labels": 40}
    assert node["signal"] == {"model": True, "random_init": False, "shuffled_labels": True}  # target reached
    assert node["nodes"] == ["a0.q[h1.3]", "m1.hidden[17]"]
