"""ec2-import-monitor: watches EC2 VM Import tasks, reports every change."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ec2-import-monitor")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
