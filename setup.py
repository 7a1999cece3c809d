"""pdn_perception: installs with pip into a venv and builds with colcon (ament_python) on ROS 2."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "pdn_perception"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    python_requires=">=3.10",
    # Runtime deps come from requirements.txt (pip) or package.xml (rosdep); not repeated here.
    install_requires=["setuptools"],
    extras_require={"tensorrt": ["torch-tensorrt>=2.14"], "sahi": ["sahi==0.12.8"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
        (f"share/{PACKAGE}/models", glob("models/*.safetensors") + glob("models/*.json")),
    ],
    package_data={PACKAGE: ["py.typed"]},
    zip_safe=False,
    maintainer="pdn_perception developers",
    maintainer_email="pdn-perception@example.com",
    description="PatchDrive perception: global saliency, top-K full-resolution crops, "
    "batched shared-weight detector, ROS 2 node.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "pdn_perception_node = pdn_perception.ros.node:main",
            "pdn-detect = pdn_perception.cli.detect:main",
            "pdn-train = pdn_perception.cli.train:main",
            "pdn-eval = pdn_perception.cli.evaluate:main",
            "pdn-bench = pdn_perception.cli.bench:main",
            "pdn-replay = pdn_perception.cli.replay:main",
            "pdn-process = pdn_perception.cli.process:main",
            "pdn-make-bag = pdn_perception.cli.make_bag:main",
            "pdn-build-engine = pdn_perception.cli.build_engine:main",
            "pdn-demo = pdn_perception.cli.demo:main",
        ],
    },
)
