"""ament_python package ros_segcap (also pip-installable for the CLI and the core)."""
from glob import glob

from setuptools import find_packages, setup

package_name = 'ros_segcap'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(include=['ros_segcap', 'ros_segcap.*', 'training', 'training.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*')),
    ],
    package_data={'ros_segcap': ['assets/*', 'weights/*/*', 'models/segcap/kernels.c']},
    include_package_data=True,
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='ros_segcap developers',
    maintainer_email='dev@ros-segcap.local',
    description='Segment and caption camera frames from plain-language commands.',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'segcap = ros_segcap.cli:main',
            'segcap_node = ros_segcap.ros.node:main',
            'segcap_camera = ros_segcap.ros.camera:main',
        ],
    },
)
