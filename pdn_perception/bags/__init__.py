"""Bags: sample camera bags with ground truth, replay into ROS, offline processing, results.

* ``io``      - rosbags reading/writing, the project typestore (vision_msgs with upstream
  hashes), clear errors for broken bags, atomic output directories;
* ``sample``  - ``pdn-make-bag``: synthetic held-out frames + ``ground_truth.json``; scoring;
* ``process`` - ``pdn-process``: the pipeline over a bag, results as an mcap bag (no DDS);
* ``results`` - results bags back into per-frame arrays (scoring, overlays);
* ``replay``  - ``pdn-replay``: stored CDR bytes into ROS at recorded timing.

Only ``replay`` imports rclpy; nothing is imported here, so ``import pdn_perception.bags.io``
stays free of DDS. Message <-> numpy conversion is ``pdn_perception.ros.convert``'s.
"""
