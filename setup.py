from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="lynx-pipeline",
    version="1.0.0",
    description="Link the steps of an ML process and run them one after another, once or on a cron schedule.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["lynx", "lynx.*"]),
    # A plain path entry for editable installs: no import hook slowing every interpreter start.
    package_dir={"": "."},
    python_requires=">=3.9",
    install_requires=[
        "click>=8.0",
        "omegaconf>=2.1",
        "apscheduler>=3.10,<4",
        "termcolor>=2.3",
        "psutil>=5.9",
        "fire>=0.5",
        "tzlocal>=4.0",
        "PyYAML>=5.4",
    ],
    extras_require={
        "test": ["pytest>=7", "pexpect>=4.8", "hypothesis>=6", "ruff>=0.4", "aiosmtpd>=1.4", "apprise>=1.6"],
        # The 'apprise' notification channel: 100+ services through the Apprise library.
        "apprise": ["apprise>=1.6"],
    },
    entry_points={"console_scripts": ["lynx=lynx.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
        "Operating System :: POSIX",
    ],
)
