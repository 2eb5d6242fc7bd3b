"""The commands that use a trained run, installed as console scripts with the package.

``attnlstm-evaluate`` (:mod:`attnlstm.cli.evaluate`) scores a run on a split,
``attnlstm-generate`` (:mod:`attnlstm.cli.generate`) samples text from a language model,
``attnlstm-tag`` (:mod:`attnlstm.cli.tag`) tags sentences and ``attnlstm-translate``
(:mod:`attnlstm.cli.translate`) translates them. Each loads its model through
:func:`attnlstm.runs.load_run`, and each module's ``main(argv)`` returns the exit status
(:func:`attnlstm.cli.common.command`): 0; 2 after one ``error: ...`` line on stderr for bad
input (a missing or unreadable run, a run of another model, a bad option value, an output
folder that cannot be written); 1 after one line for a bug. Results alone go to stdout; a
traceback is printed only with ``ATTNLSTM_DEBUG=1``.
"""

# before any command module imports torch: OpenMP reads its wait policy and threads once
import attnlstm.runtime  # noqa: F401
