"""Ray behind one edge: every workaround for Ray Tune's own behaviour lives here, measured on the
Ray version in ``TESTED`` (pyproject pins it).

What is worked around, and where it is used:

- **Experiment snapshots** (`driver_env`): Ray snapshots the experiment state on a timer; a resume
  after kill -9 must repeat nothing, so it snapshots after every result.
- **Ctrl-C** (`SigintWatch`): Ray's Tuner takes SIGINT, stops the trials and returns a result
  grid that looks finished; the one trace it leaves tells an interrupted search from a done one.
- **Token auth** (`token_auth_for_address`): a local Ray 2.60 uses token auth; the token goes to
  a cluster only when the user names the file.
- **Joining a cluster** (`tune.ray_edge.cluster`): ``ray.init`` retries a bad address for about
  14 minutes, and ``auto`` takes whichever Ray it finds first; the address is checked in
  seconds, and ``auto`` with several Rays on the host refused.
- **State repair** (`repair_state`, `session_dir`): Ray copies its driver files into the run
  folder file by file; a kill -9 mid-copy leaves them cut short. They are restored from the
  driver's staging folder of this run's own recorded session.
- **Staging folders** (`trial_folder`): a trial's ``get_trial_dir()`` is a local staging folder
  that reaches the run folder only for a trial on a fresh actor (``REUSE_ACTORS``).
- **The checkpoint/result race** (`resume_checkpoint`): a snapshot can fall between a result and
  its checkpoint; the restored trial takes the newest checkpoint its results record.
- **Checkpoint retention** (`checkpoint_config`): PBT clones checkpoints a cap would delete.
- **Trial folder names** (`trial_dirname`): short and readable, ``trial_0007_4f99c683``.
- **Processes left behind** (`local_node_id`, `start_reaper`, `reap_node`): after kill -9 of a
  driver that started its own Ray, two of Ray's agents hang for about a minute instead of
  exiting (`tune.ray_edge.reaper`); a watchdog stops them at once.
- **A retried trial's leftover error.txt** (`tune.ray_edge.trial_states`): Ray keeps a failed
  attempt's error.txt after the retry completes; the driver records how each trial ended.
- **Ray's output after a failure** (`quiet_failures`): its traceback and raylet lines reach the
  terminal only under ``-v``; the driver prints one line per retried attempt.
- **HParams** (`tune.ray_edge.loggers`): Ray's TensorBoard logger drops a list-valued parameter
  (the milestones) from the HParams; we log it as text plus the scalars a plot needs.
- **Optuna's view of stopped trials** (`tune.ray_edge.optuna_search`): Ray tells Optuna an
  ASHA-stopped trial COMPLETE with its rung's value; we tell it PRUNED, with every validation
  as an intermediate value at its epoch.

On another Ray version `check()` says once which of these are unverified; the ones that read
Ray's private files (state repair) are then skipped rather than trusted.

One concern a file: `version` (the tested version and the check), `environment` (driver and
token settings, Ray's output), `cluster` (the address joined), `signals` (Ctrl-C), `trials`
(folder names, staging folders, checkpoints), `trial_states` (how a trial ended),
`state_repair` (Ray's files after kill -9, with its file-trust checks), `processes` and `reaper`
(what a killed driver's Ray leaves running), `optuna_search` and `loggers` (what
Optuna and TensorBoard are told). Callers import the concern they need (``from tune.ray_edge.signals import
SigintWatch``); this file only indexes them. Nothing here but `trial_states`, `loggers` and
`optuna_search` (imported once Ray runs) imports Ray at import time: the token settings must be in the
environment before ``import ray``.
"""
